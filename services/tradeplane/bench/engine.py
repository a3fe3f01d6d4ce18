"""Engine-service benchmark: commands/s from the JetStream command stream to durable event
batches, on real NATS (``sync_interval: always``: fsync before every ack; see ``--nats-sync``).

The streams are filled first (seeded book mix from ``bench.book``, ``--per-msg`` commands
per message as the gateway's batching produces them), then the engines run until each has
published the events of its stream's last message.

* Default: one symbol, one engine in this process; the time from its start to its last
  batch is the figure.
* ``--symbols N``: the scaling run. One engine per symbol, each in its own OS process (one
  symbol each, the same seeded mix in every stream), all released together once every
  process is connected; per symbol and aggregate commands/s (aggregate = all commands /
  (last engine done - first engine started)) and the speed-up over one symbol, at 1
  command per message and at ``--per-msg``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import TypeVar

from tradeplane.adapters.bus import Bus
from tradeplane.bench.book import generate_ops
from tradeplane.domain import books, codec
from tradeplane.domain.books import BookChoice
from tradeplane.domain.model import Command
from tradeplane.domain.pairs import DEMO_PAIRS, PairRules
from tradeplane.engine.service import Engine
from tradeplane.platform.servers import NatsServer

RULES = DEMO_PAIRS[0]
T = TypeVar("T")
#: How long a scaling run waits for its engine processes before giving up.
PROCESS_TIMEOUT_S = 600.0


async def _fill(bus: Bus, rules: PairRules, ops: list[Command], per_msg: int) -> int:
    """Append ``ops`` to the symbol's command stream, ``per_msg`` per message; returns the
    stream's last sequence."""
    await bus.ensure_symbol(rules.symbol)
    await bus.ensure_events()
    acks = []
    for i in range(0, len(ops), per_msg):
        data = codec.encode(ops[i:i + per_msg])
        # publish_async returns the future of the ack once the message is sent
        acks.append(await bus.js.publish_async(
            f"cmd.{rules.symbol}", data, headers={"Nats-Msg-Id": f"m{i}"}))
    await asyncio.gather(*acks)
    last = await bus.last_command_seq(rules.symbol)
    assert last == len(acks), f"stream holds {last} of {len(acks)} messages"
    return last


async def _drain(bus: Bus, rules: PairRules, last: int, book: BookChoice = "auto") -> None:
    """Run one engine until it has published the events of command message ``last``."""
    engine = Engine(bus, rules, snapshot_every=10**12, book=book)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    while engine.published_seq < last and not task.done():  # noqa: ASYNC110 - plain attribute
        await asyncio.sleep(0.005)
    stop.set()
    await task


async def _run(url: str, commands: int, per_msg: int, seed: int,
               book: BookChoice = "auto") -> tuple[float, int, int]:
    bus = await Bus.connect(url, name="bench-engine")
    try:
        ops, _ = generate_ops(commands, seed)
        last = await _fill(bus, RULES, ops, per_msg)
        started = time.perf_counter()
        await _drain(bus, RULES, last, book)
        took = time.perf_counter() - started
        info = await bus.js.stream_info("EVENTS")
        return took, len(ops), int(info.state.messages)
    finally:
        await bus.close()


# ---------------------------------------------------------------------- scaling run
@dataclass(frozen=True)
class EngineRun:
    """One engine process's result; times are ``time.monotonic()``, which is one clock
    for every process on the machine."""

    symbol: str
    commands: int
    started: float
    ended: float
    cpu: float  # CPU seconds (user + system) the engine process spent meanwhile

    @property
    def rate(self) -> float:
        return self.commands / (self.ended - self.started)


@dataclass(frozen=True)
class ScalingRow:
    per_msg: int
    runs: list[EngineRun]
    server_cpu: float  # CPU seconds nats-server spent from release to the last engine done

    @property
    def aggregate(self) -> float:
        took = max(r.ended for r in self.runs) - min(r.started for r in self.runs)
        return sum(r.commands for r in self.runs) / took


def _engine_process(url: str, rules: PairRules, last: int, commands: int,
                    ready: multiprocessing.Queue[str], go: MpEvent,
                    out: multiprocessing.Queue[EngineRun], book: BookChoice = "auto") -> None:
    async def main() -> None:
        bus = await Bus.connect(url, name=f"bench-engine-{rules.symbol}")
        try:
            ready.put(rules.symbol)
            # Blocking the loop is fine here: nothing else is running in it yet.
            go.wait()
            started, cpu = time.monotonic(), time.process_time()
            await _drain(bus, rules, last, book)
            out.put(EngineRun(rules.symbol, commands, started, time.monotonic(),
                              time.process_time() - cpu))
        finally:
            await bus.close()

    asyncio.run(main())


async def _fill_all(url: str, symbols: list[PairRules], ops: list[Command],
                    per_msg: int) -> int:
    bus = await Bus.connect(url, name="bench-engine-fill")
    try:
        lasts = {await _fill(bus, rules, ops, per_msg) for rules in symbols}
        # The snapshot bucket exists before the engines race to create it.
        await bus.load_snapshot(symbols[0].symbol)
    finally:
        await bus.close()
    (last,) = lasts
    return last


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scaling_row(url: str, server_pid: int | None, run_id: str, symbols: int,
                 ops: list[Command], per_msg: int, book: BookChoice = "auto") -> ScalingRow:
    pairs = [dataclasses.replace(RULES, base=f"B{run_id}X{i}") for i in range(symbols)]
    last = asyncio.run(_fill_all(url, pairs, ops, per_msg))
    ctx = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[str] = ctx.Queue()
    out: multiprocessing.Queue[EngineRun] = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_engine_process,
                         args=(url, rules, last, len(ops), ready, go, out, book), daemon=True)
             for rules in pairs]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        _collect(ready, procs, deadline)
        server_cpu = cpu_seconds(server_pid)
        go.set()
        runs = _collect(out, procs, deadline)
        server_cpu = cpu_seconds(server_pid) - server_cpu
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    return ScalingRow(per_msg, sorted(runs, key=lambda r: r.symbol), server_cpu)


def _collect(q: multiprocessing.Queue[T], procs: Sequence[BaseProcess], deadline: float) -> list[T]:
    """One item from each process; fails fast when one of them dies first.

    Raises:
        RuntimeError: a process exited with an error, or the deadline passed.
    """
    items: list[T] = []
    while len(items) < len(procs):
        try:
            items.append(q.get(timeout=0.5))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("an engine process failed (see its traceback)") from None
            if time.monotonic() > deadline:
                raise RuntimeError("the engine processes did not finish in time") from None
    return items


def _scaling(url: str, server_pid: int | None, sync: str, symbols: int, commands: int,
             commands_at_1: int, per_msg: int, seed: int, book: BookChoice = "auto") -> None:
    print(f"engine service scaling: one engine per symbol, each in its own OS process "
          f"({os.cpu_count()} cores, nats-server sync_interval {sync})")
    print("  streams pre-filled with the same seeded mix; engines released together")
    print("  (busy = CPU time / wall time of each engine process, and of nats-server "
          "(cores); an engine below 100% waited for the bus or for a core)")
    print(f"  {'per msg':>7}  {'symbols':>7}  {'commands/sym':>12}  "
          f"{'commands/s per symbol (busy)':<34}  {'aggregate/s':>11}  {'speed-up':>8}  "
          f"{'nats busy':>9}")
    for i, pm in enumerate(dict.fromkeys((1, per_msg))):
        n = commands_at_1 if pm == 1 else commands
        ops, _ = generate_ops(n, seed)
        base: float | None = None
        for count in dict.fromkeys((1, symbols)):
            row = _scaling_row(url, server_pid, f"{i}{count}", count, ops, pm, book)
            base = base or row.aggregate
            each = " / ".join(
                f"{r.rate:,.0f} ({r.cpu / (r.ended - r.started):.0%})" for r in row.runs)
            wall = max(r.ended for r in row.runs) - min(r.started for r in row.runs)
            print(f"  {pm:>7}  {count:>7}  {n:>12,d}  {each:<34}  {row.aggregate:>11,.0f}  "
                  f"{row.aggregate / base:>7.2f}x  {row.server_cpu / wall:>9.0%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tradeplane bench engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commands", type=int, default=300_000, help="commands per symbol")
    p.add_argument("--per-msg", type=int, default=50, help="commands per stream message")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--symbols", type=int, default=1,
                   help="N > 1: scaling run, one engine process per symbol, compared with 1")
    p.add_argument("--nats-sync", default="always",
                   help="nats-server sync_interval: 'always' (fsync before every ack, the "
                        "durable figure), 'default' or a duration, to see the fsync's cost")
    p.add_argument("--commands-at-1", type=int, default=60_000,
                   help="scaling run: commands per symbol at 1 command per message "
                        "(each is one stream message to fill)")
    p.add_argument("--book", choices=["auto", "compiled", "python"], default="auto",
                   help="the engine's order book: auto (the compiled one when built), "
                        "compiled or python (the pure-Python one)")
    args = p.parse_args(argv)
    if args.symbols < 1 or args.per_msg < 1:
        p.error("--symbols and --per-msg must be at least 1")
    folder = Path(tempfile.mkdtemp(prefix="tp-bench-engine-"))
    nats = NatsServer(folder / "nats", sync=args.nats_sync)
    nats.start()
    try:
        if args.symbols > 1:
            _scaling(nats.url, nats.pid, args.nats_sync, args.symbols, args.commands,
                     args.commands_at_1, args.per_msg, args.seed, args.book)
            return 0
        took, n, batches = asyncio.run(_run(nats.url, args.commands, args.per_msg, args.seed,
                                            args.book))
    finally:
        nats.stop()
    impl = books.implementation(books.select(args.book))
    print("engine service (JetStream commands -> book -> durable event batches), one symbol, "
          f"{'compiled' if impl == 'compiled' else 'pure-Python'} order book")
    print(f"  commands                  {n:10,d}  ({args.per_msg} per stream message)")
    print(f"  event batches published   {batches:10,d}")
    print(f"  commands/s                {n / took:10,.0f}  ({took:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
