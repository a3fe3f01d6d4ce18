"""Which platform a CLI command uses (``platform/discovery.py``): ``--data-dir`` >
``TRADEPLANE_DATA_DIR`` > explicit settings > the nearest running platform > the last
``tradeplane up`` > the nearest stopped one; else a message saying where it looked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradeplane.platform.discovery import (
    DiscoveryError,
    Source,
    locate,
    parse_platform,
    state_pointer,
)

LIVE = 4242


def alive(pid: int) -> bool:
    return pid == LIVE


def folder(root: Path, *, pid: int | None, port: int = 8080) -> Path:
    """A data folder as ``tradeplane up`` leaves it (``pid`` None: no platform.json)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ports.json").write_text('{"nats": 1, "postgres": 2, "redis": 3}')
    if pid is not None:
        (root / "platform.json").write_text(json.dumps(
            {"pid": pid, "http_port": port, "data_dir": str(root), "started_ms": 1}))
    return root


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def point_current_at(home: Path, data: Path) -> None:
    pointer = state_pointer({}, home)
    pointer.parent.mkdir(parents=True)
    pointer.write_text(f"{data}\n")


def test_the_data_dir_flag_wins_over_everything(tmp_path: Path, home: Path) -> None:
    given = folder(tmp_path / "given", pid=None)
    folder(tmp_path / "cwd" / ".tradeplane", pid=LIVE)
    env = {"TRADEPLANE_DATA_DIR": str(folder(tmp_path / "env", pid=LIVE)),
           "TRADEPLANE_DATABASE_URL": "postgresql://db/x"}
    found = locate("../given", env, tmp_path / "cwd", home, alive)
    assert (found.source, found.data_dir, found.running) == (Source.FLAG, given, None)


def test_the_data_dir_variable_wins_over_settings_and_nearby_folders(
    tmp_path: Path, home: Path
) -> None:
    named = folder(tmp_path / "env", pid=LIVE, port=9999)
    env = {"TRADEPLANE_DATA_DIR": str(named), "TRADEPLANE_DATABASE_URL": "postgresql://db/x"}
    found = locate(None, env, tmp_path, home, alive)
    assert found.source is Source.ENV_DATA_DIR and found.data_dir == named
    assert found.running is not None and found.running.http_port == 9999


@pytest.mark.parametrize("var", ["TRADEPLANE_DATABASE_URL", "TRADEPLANE_DATABASE_URL_FILE",
                                 "TRADEPLANE_VAULT_ADDR", "TRADEPLANE_NATS_URL"])
def test_explicit_settings_mean_no_data_folder(tmp_path: Path, home: Path, var: str) -> None:
    folder(tmp_path / ".tradeplane", pid=LIVE)
    found = locate(None, {var: "x"}, tmp_path, home, alive)
    assert (found.source, found.data_dir) == (Source.ENV_SETTINGS, None)


def test_the_nearest_running_platform_is_in_this_or_a_parent_folder(
    tmp_path: Path, home: Path
) -> None:
    outer = folder(tmp_path / ".tradeplane", pid=LIVE)
    inner = folder(tmp_path / "a" / ".tradeplane", pid=LIVE + 1)  # its up has exited
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    found = locate(None, {}, deep, home, alive)
    assert (found.source, found.data_dir) == (Source.NEAREST, outer)
    folder(inner, pid=LIVE)
    assert locate(None, {}, deep, home, alive).data_dir == inner


def test_the_last_platform_up_started_is_used_while_its_process_lives(
    tmp_path: Path, home: Path
) -> None:
    current = folder(tmp_path / "somewhere" / "data", pid=LIVE)
    point_current_at(home, current)
    stopped_nearby = folder(tmp_path / "cwd" / ".tradeplane", pid=None)
    found = locate(None, {}, tmp_path / "cwd", home, alive)
    assert (found.source, found.data_dir) == (Source.CURRENT, current)
    folder(current, pid=LIVE + 1)  # that up has exited: the stopped folder nearby
    found = locate(None, {}, tmp_path / "cwd", home, alive)
    assert (found.source, found.data_dir, found.running) == (
        Source.NEAREST_STOPPED, stopped_nearby, None)


def test_xdg_state_home_moves_the_pointer(tmp_path: Path, home: Path) -> None:
    assert state_pointer({}, home) == home / ".local/state/tradeplane/current"
    assert state_pointer({"XDG_STATE_HOME": str(tmp_path / "st")}, home) == \
        tmp_path / "st/tradeplane/current"
    assert state_pointer({"XDG_STATE_HOME": "relative"}, home) == \
        home / ".local/state/tradeplane/current"  # the spec: absolute paths only


def test_without_a_platform_the_error_says_where_it_looked_and_what_to_run(
    tmp_path: Path, home: Path
) -> None:
    with pytest.raises(DiscoveryError) as caught:
        locate(None, {}, tmp_path, home, alive)
    msg = str(caught.value)
    assert str(tmp_path / ".tradeplane") in msg and str(state_pointer({}, home)) in msg
    assert "is `tradeplane up` running?" in msg and "--data-dir" in msg


@pytest.mark.parametrize("given", ["", "x" * 4097, "a\x00b", "a\nb"])
def test_a_malformed_data_dir_is_refused(tmp_path: Path, home: Path, given: str) -> None:
    with pytest.raises(DiscoveryError):
        locate(given, {}, tmp_path, home, alive)
    with pytest.raises(DiscoveryError):
        locate(None, {"TRADEPLANE_DATA_DIR": given}, tmp_path, home, alive)


def test_a_named_folder_without_a_platform_is_refused(tmp_path: Path, home: Path) -> None:
    with pytest.raises(DiscoveryError, match=r"ports\.json missing"):
        locate(str(tmp_path), {}, tmp_path, home, alive)


@pytest.mark.parametrize("text", [
    "", "[]", "{", '{"pid": "1", "http_port": 1, "data_dir": "/x", "started_ms": 1}',
    '{"pid": true, "http_port": 1, "data_dir": "/x", "started_ms": 1}',
    '{"pid": 1, "http_port": 70000, "data_dir": "/x", "started_ms": 1}',
    '{"pid": 0, "http_port": 1, "data_dir": "/x", "started_ms": 1}',
    '{"pid": 1, "http_port": 1, "data_dir": 5, "started_ms": 1}',
    '{"pid": 1, "http_port": 1, "data_dir": "/x"}',
])
def test_a_malformed_platform_file_is_not_a_running_platform(text: str) -> None:
    assert parse_platform(text) is None


def test_a_platform_file_with_a_dead_pid_or_garbage_is_passed_over(
    tmp_path: Path, home: Path
) -> None:
    data = folder(tmp_path / ".tradeplane", pid=None)
    (data / "platform.json").write_bytes(b"\xff" * 100)
    found = locate(None, {}, tmp_path, home, alive)
    assert (found.source, found.running) == (Source.NEAREST_STOPPED, None)
