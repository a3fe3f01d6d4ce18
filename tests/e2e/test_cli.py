"""The ``tradeplane`` CLI finds its platform from any folder: ``--data-dir`` (before or
after the subcommand), ``TRADEPLANE_DATA_DIR``, the nearest running platform in a parent
folder, the last ``tradeplane up``; ``tradeplane env`` hands its settings to a shell; and
when nothing answers it says so in one line, suggesting ``tradeplane up``.

The platform here is a data folder laid out as ``tradeplane up`` leaves it (its own
NATS, PostgreSQL and Redis, ``ports.json``, ``secrets.json`` and a ``platform.json``
naming a live process: this test's)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradeplane.platform.servers import LocalServers

pytestmark = pytest.mark.e2e


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(state: Path, **extra: str) -> dict[str, str]:
    """No TRADEPLANE_* settings, and a state pointer of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEPLANE_")}
    env["XDG_STATE_HOME"] = str(state)
    env.update(extra)
    return env


def tp(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tradeplane.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _write_platform(data: Path, pid: int) -> None:
    (data / "platform.json").write_text(json.dumps({
        "pid": pid, "http_port": 18080, "data_dir": str(data),
        "started_ms": int(time.time() * 1000)}))


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """``<world>/project/.tradeplane``: a running platform's data folder (its servers up,
    ``platform.json`` naming this live process); ``<world>/elsewhere``: an unrelated
    folder; ``<world>/state``: the XDG state folder (no pointer yet)."""
    root = Path(tempfile.mkdtemp(prefix="tp-cli-"))
    data = root / "project" / ".tradeplane"
    data.mkdir(parents=True)
    (root / "project" / "src" / "deep").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    (root / "state").mkdir()
    try:
        with LocalServers(data):
            _write_platform(data, os.getpid())
            r = tp("migrate", cwd=root / "project", env=_clean_env(root / "state"))
            assert r.returncode == 0, r.stderr
            yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_command_in_a_subfolder_finds_the_running_platform_of_a_parent_folder(
    world: Path,
) -> None:
    r = tp("user-create", "sub-alice", cwd=world / "project" / "src" / "deep",
           env=_clean_env(world / "state"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "sub-alice"


@pytest.mark.parametrize("how", ["flag-after", "flag-before", "env"])
def test_a_command_elsewhere_uses_the_data_dir_it_is_given(world: Path, how: str) -> None:
    data = str(world / "project" / ".tradeplane")
    env = _clean_env(world / "state")
    args = ["credit", "sub-alice", "USDT", "5", "--ref", f"cli-{how}"]
    if how == "flag-after":
        args += ["--data-dir", data]
    elif how == "flag-before":
        args = ["--data-dir", data, *args]
    else:
        env["TRADEPLANE_DATA_DIR"] = data
    tp("user-create", "sub-alice", "--data-dir", data, cwd=world / "elsewhere", env=env)
    r = tp(*args, cwd=world / "elsewhere", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["applied"] is True


def test_a_command_elsewhere_uses_the_last_platform_up_started_while_it_runs(
    world: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (state / "tradeplane").mkdir(parents=True)
    (state / "tradeplane" / "current").write_text(f"{world / 'project' / '.tradeplane'}\n")
    r = tp("check-ledger", cwd=world / "elsewhere", env=_clean_env(state))
    assert r.returncode == 0, r.stderr
    assert "ledger OK" in r.stdout


def test_tradeplane_env_gives_a_shell_the_platform(world: Path) -> None:
    """``eval "$(tradeplane env)"`` in the project, then any folder reaches it."""
    data = world / "project" / ".tradeplane"
    env = _clean_env(world / "state")
    r = tp("env", cwd=world / "project", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(line.startswith("export TRADEPLANE_") for line in lines), r.stdout
    names = {line.split("=", 1)[0].removeprefix("export ") for line in lines}
    assert names == {"TRADEPLANE_DATA_DIR", "TRADEPLANE_DATABASE_URL", "TRADEPLANE_NATS_URL",
                     "TRADEPLANE_REDIS_URL", "TRADEPLANE_GATEWAY_URL",
                     "TRADEPLANE_ADMIN_TOKEN"}
    admin = json.loads((data / "secrets.json").read_text())["admin_token"]
    assert f"export TRADEPLANE_ADMIN_TOKEN={admin}" in lines
    assert "export TRADEPLANE_GATEWAY_URL=http://127.0.0.1:18080" in lines
    script = (f'eval "$({sys.executable} -m tradeplane.cli env)" && cd {world / "elsewhere"}'
              f' && {sys.executable} -m tradeplane.cli check-ledger')
    done = subprocess.run(["bash", "-c", script], cwd=world / "project", env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "ledger OK" in done.stdout


@pytest.fixture
def stopped(tmp_path: Path) -> Path:
    """A data folder whose platform has stopped: nothing listens on its ports."""
    data = tmp_path / "stopped" / ".tradeplane"
    data.mkdir(parents=True)
    (data / "ports.json").write_text(json.dumps(
        {"nats": _closed_port(), "postgres": _closed_port(), "redis": _closed_port()}))
    return data


@pytest.mark.parametrize(("args", "server"), [
    (["user-create", "nobody"], "database (PostgreSQL)"),
    (["pair-trading", "--symbol", "BTC-USDT", "--state", "halted"], "NATS"),
], ids=["database", "nats"])
def test_a_stopped_platform_is_one_line_suggesting_tradeplane_up(
    stopped: Path, tmp_path: Path, args: list[str], server: str
) -> None:
    port = json.loads((stopped / "ports.json").read_text())[
        "postgres" if server.startswith("database") else "nats"]
    r = tp(*args, "--data-dir", str(stopped), cwd=tmp_path, env=_clean_env(tmp_path))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"tradeplane: cannot reach the platform's {server} at 127.0.0.1:{port} — is "
        "`tradeplane up` running? (or pass --data-dir / set TRADEPLANE_DATA_DIR)"]
    assert r.stdout == ""


def test_the_folder_of_a_stopped_platform_is_used_and_said_to_be_stopped(
    stopped: Path, tmp_path: Path
) -> None:
    """Beside a folder whose ``up`` has exited (no platform.json, or a dead pid)."""
    _write_platform(stopped, 2**22)  # beyond pid_max: never alive
    r = tp("check-ledger", cwd=stopped.parent, env=_clean_env(tmp_path))
    assert r.returncode == 1
    assert "is `tradeplane up` running?" in r.stderr and "Traceback" not in r.stderr


def test_without_any_platform_the_cli_says_where_it_looked_and_what_to_run(
    tmp_path: Path,
) -> None:
    r = tp("user-create", "nobody", cwd=tmp_path, env=_clean_env(tmp_path / "state"))
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()
    assert line.startswith("tradeplane: no running platform found (looked in "
                           f"{tmp_path / '.tradeplane'}")
    assert "is `tradeplane up` running?" in line
    assert "TRADEPLANE_ADMIN_TOKEN" not in line


@pytest.mark.parametrize("given", ["", "a\nb", "x" * 5000])
def test_a_bad_data_dir_is_refused_in_one_line(tmp_path: Path, given: str) -> None:
    r = tp("check-ledger", "--data-dir", given, cwd=tmp_path, env=_clean_env(tmp_path))
    assert r.returncode == 2
    assert "argument --data-dir" in r.stderr and "Traceback" not in r.stderr
