"""The ``clock-skew`` fault: one process restarted with its wall clock ``SKEW_S`` seconds
ahead of or behind the machine's, through Debian's libfaketime (``LD_PRELOAD``, a static
``FAKETIME`` offset: the process's clocks all move by the same constant, as after a bad
NTP step at boot), kept so for a few seconds under load, then restarted on the true clock.

- The gateway: a client's ``timestamp`` is then outside its ``recvWindow``, and every
  signed request must be refused with -1021 (never taken), until the skew ends.
- An engine: its clock ticks (which expire GTD orders) carry its skewed time into the
  command log; the checks after must still find every invariant held, the replay equal
  to the engine and nothing lost when the clock steps back.

libfaketime cannot change a running process's offset here: its dynamic mode
(``FAKETIME_TIMESTAMP_FILE``) moves the monotonic clock with the wall clock, which no real
skew does, and with the monotonic clock left alone Python's ``time.sleep`` fails with
EINVAL; hence the restart, which the kill faults show the platform takes in its stride.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tradeplane.chaos.report import say
from tradeplane.platform.supervisor import Command

#: How far the skewed clock is off: well outside the largest recvWindow (60 s).
SKEW_S = 90
#: How long the skewed process runs under load.
HOLD_S = 4.0
#: How long the restarted gateway may take to answer.
START_TIMEOUT_S = 20.0
_LIB_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"
#: The Debian package that ships it (installed by .ci/run).
PACKAGE = "libfaketime"


def libfaketime() -> Path | None:
    """Debian's libfaketime, if installed."""
    found = sorted(Path("/").glob(_LIB_GLOB.lstrip("/")))
    return found[0] if found else None


def _restart(command: Command, env: dict[str, str]) -> None:
    command.stop()
    command.env = env
    command.start()


def skew(command: Command, seconds: int, idle: Callable[[float], None],
         ask: Callable[[], tuple[int, str]], *, gateway: bool) -> list[str]:
    """Run ``command`` ``seconds`` off the true time for HOLD_S, then on the true time
    again. With ``gateway``, an order asked for meanwhile (``ask``) must be refused with
    -1021. Returns the problems found."""
    lib = libfaketime()
    if lib is None:
        return [f"clock-skew: libfaketime is not installed (Debian's {PACKAGE})"]
    true_env = dict(command.env)
    problems: list[str] = []
    say(f"  {command.name} restarted with its clock {seconds:+d} s off")
    try:
        _restart(command, {**true_env, "LD_PRELOAD": str(lib),
                           "FAKETIME": f"{seconds:+d}s"})
        if gateway:
            status, body = 0, ""
            waited = 0.0
            while status == 0 and waited < START_TIMEOUT_S:
                status, body = ask()
                if status == 0:
                    idle(0.2)
                    waited += 0.2
            say(f"  an order through the skewed gateway: {status} {body[:160]}")
            if not (status == 400 and _code(body) == -1021):
                problems.append(f"clock-skew: the gateway {seconds:+d} s off answered "
                                f"{status} {body[:160]} (expected 400, -1021)")
        idle(HOLD_S)
    finally:
        _restart(command, true_env)
    return problems


def _code(body: str) -> int | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, int) else None
