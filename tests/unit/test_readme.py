"""Every command in README.md's ```bash blocks is one the project can run as written:
``make`` targets exist, ``tradeplane`` command lines parse with the real parser (nothing is
run), ``curl`` reaches a route the gateway serves, files a command reads exist (or an
earlier line of the block makes them), and what ``openssl`` writes stays out of the
repository or is git-ignored. A command this check does not know fails it: teach it here."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import itertools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tradeplane.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Top-level folders: an argument starting with one names a file that must exist.
REPO_DIRS = tuple(f"{p.name}/" for p in ROOT.iterdir() if p.is_dir() and
                  not p.name.startswith("."))
_ENV_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")
_PLACEHOLDER = re.compile(r"<[^<>\n]+>")


@dataclass
class Block:
    """One ```bash block: its command lines (continuations joined) and the files its
    earlier lines write."""

    number: int
    commands: list[str]
    made: set[str] = field(default_factory=set)


def bash_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines: list[str] | None = None
    for raw in text.splitlines():
        if lines is None:
            if raw.strip() == "```bash":
                lines = []
            continue
        if raw.strip() == "```":
            blocks.append(Block(len(blocks) + 1, _join(lines)))
            lines = None
            continue
        lines.append(raw)
    assert lines is None, "README.md: a ```bash block is not closed"
    return blocks


def _join(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole and not whole.startswith("#"):
            out.append(whole)
    assert not pending, "a command ends in a line continuation"
    return out


def words(command: str) -> list[str]:
    """The command's words, comments dropped, each ``<placeholder>`` one word."""
    return shlex.split(_PLACEHOLDER.sub("PLACEHOLDER", command), comments=True)


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def ignored(path: str) -> bool:
    """Whether ``.gitignore`` ignores a file of this name in the repository's root."""
    patterns = [p.strip() for p in (ROOT / ".gitignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    return any(fnmatch.fnmatch(path, p.lstrip("/")) for p in patterns if "/" not in
               p.rstrip("/")[1:])


def gateway_serves(path: str) -> bool:
    """Whether a route of the gateway (built, not started) takes this path."""
    from starlette.routing import Match

    from tradeplane.config import Settings
    from tradeplane.gateway.app import create_app

    app = create_app(Settings(dev_mode=True))
    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    return any(r.matches(scope)[0] is not Match.NONE for r in app.routes)


def outside_repo(path: str) -> bool:
    return path.startswith(("~", "/", "$HOME"))


def _exists_or_made(path: str, block: Block) -> bool:
    return path in block.made or (ROOT / path).exists()


def check_tradeplane(argv: list[str], block: Block) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"does not parse: {err.getvalue().strip()}") from exc
    public_key = getattr(args, "public_key_file", "")
    if public_key:
        assert _exists_or_made(public_key, block), f"{public_key} is made by no earlier line"


def check_openssl(argv: list[str], block: Block) -> None:
    for flag, value in itertools.pairwise(argv):
        if flag == "-in":
            assert outside_repo(value) or _exists_or_made(value, block), \
                f"{value} is made by no earlier line"
            block.made.add(value)
        elif flag == "-out":
            assert outside_repo(value) or ignored(value), \
                f"openssl writes {value} into the repository, not git-ignored"
            block.made.add(value)


def check_files(argv: list[str]) -> None:
    """Files named with ``-f`` and paths into the repository's folders exist."""
    for i, word in enumerate(argv):
        named = argv[i + 1] if word == "-f" and i + 1 < len(argv) else None
        for path in (named, word if word.startswith(REPO_DIRS) else None):
            if path is not None:
                assert (ROOT / path).exists(), f"{path} does not exist"


def check_command(command: str, block: Block) -> None:
    argv = words(command)
    while argv and _ENV_ASSIGNMENT.match(argv[0]):
        argv = argv[1:]
    assert argv, f"nothing to run in {command!r}"
    program, rest = argv[0], argv[1:]
    check_files(rest)
    if program == "eval":
        (inner,) = rest
        found = re.fullmatch(r"\$\((.*)\)", inner)
        assert found, f"eval of something other than $(command): {inner}"
        check_command(found.group(1), block)
    elif program == "make":
        assert set(rest) <= make_targets(), f"no Makefile target {set(rest) - make_targets()}"
    elif program in ("tradeplane", ".venv/bin/tradeplane"):
        check_tradeplane(rest, block)
    elif program == "curl":
        urls = [w for w in rest if w.startswith(("http://", "https://"))]
        assert urls, "curl without a URL"
        for url in urls:
            path = urlsplit(url).path
            assert gateway_serves(path), f"the gateway serves no {path}"
    elif program == "openssl":
        check_openssl(rest, block)
    elif program in ("helm", "kubectl"):
        pass  # their file arguments are checked above; the cluster is not ours to ask
    else:
        raise AssertionError(f"the README check does not know `{program}`: teach "
                             "tests/unit/test_readme.py how to check it")


BLOCKS = bash_blocks(README.read_text())


def test_the_readme_has_its_shell_blocks() -> None:
    assert len(BLOCKS) >= 5 and sum(len(b.commands) for b in BLOCKS) >= 20


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"block{b.number}")
def test_every_readme_command_runs_as_written(block: Block) -> None:
    for command in block.commands:
        try:
            check_command(command, block)
        except AssertionError as exc:
            raise AssertionError(f"README.md, bash block {block.number}: {command}\n"
                                 f"  {exc}") from None


@pytest.mark.parametrize(("command", "why"), [
    (".venv/bin/tradeplane key-create", "does not parse"),
    (".venv/bin/tradeplane credit alice USDT", "does not parse"),
    (".venv/bin/tradeplane key-create a --public-key-file alice.pem", "made by no"),
    ("make deploy", "no Makefile target"),
    ("curl -s http://127.0.0.1:8080/api/v9/nothing", "serves no"),
    ("openssl genpkey -algorithm ed25519 -out private.key", "not git-ignored"),
    ("helm install x charts/nothing-here", "does not exist"),
    ("kubectl apply -f manifests/nothing.yaml", "does not exist"),
    ("rm -rf build", "does not know"),
])
def test_the_check_catches_a_broken_command(command: str, why: str) -> None:
    with pytest.raises(AssertionError, match=why):
        check_command(command, Block(0, [command]))
