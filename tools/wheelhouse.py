"""Build the image's wheelhouse (``make wheelhouse``): the project's own wheel and a wheel of
every dependency, at the versions ``constraints.txt`` pins, in ``build/wheelhouse/``.

The Dockerfile installs from this folder alone (``pip install --no-index``), so building
the image needs no network and installs exactly what the tests ran with. The wheels are
built by the Python running this script, which must be a CPython 3.11 on Linux of the
image's machine architecture (compiled dependencies are manylinux wheels for it).

pip resolves for the interpreter that runs it, down to its patch release, while the image's
Python may be another 3.11.x (Debian bookworm's is 3.11.2, python:3.11-slim the newest):
redis, for one, needs async-timeout before 3.11.3 only. So the wheelhouse is closed over
every 3.11 patch release: a requirement that any of them would select is added, with its
own dependencies, until nothing is missing.

The project's own wheel goes in FOLDER, its dependencies in FOLDER/deps: the Dockerfile
installs them in two steps, so a change to our code alone reuses the dependencies' layer.

Usage: python tools/wheelhouse.py [FOLDER]   (default: build/wheelhouse)
Runs pip through this interpreter; needs ``packaging`` (a runtime dependency).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "build" / "wheelhouse"
#: The image's Python (the Dockerfile's BASE: python:3.11-slim, or Debian bookworm's).
IMAGE_PYTHON = (3, 11)
#: Patch releases the wheelhouse must serve: markers compare python_full_version.
PATCH_RELEASES = [f"3.11.{n}" for n in range(15)]
PROJECT = canonicalize_name("tradeplane")


def build(folder: Path) -> list[Path]:
    """Empty ``folder`` and fill it with wheels; return them.

    Raises:
        SystemExit: not run by the image's Python version, or pip failed.
    """
    if sys.version_info[:2] != IMAGE_PYTHON or not sys.platform.startswith("linux"):
        raise SystemExit(
            f"the wheelhouse must be built by CPython {IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]} on "
            f"Linux (the image's), not {sys.version.split()[0]} on {sys.platform}"
        )
    # A stale wheel of another version would be harmless (the install is constrained) but
    # would bloat the build context: start empty.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    targets = [str(ROOT)]
    while targets:
        _pip_wheel(folder, targets)
        targets = sorted(missing_requirements(folder))
    for leftover in (ROOT / "build" / "lib", *(ROOT / "build").glob("bdist.*")):
        # setuptools' build folders in the source tree, left by building our own wheel.
        shutil.rmtree(leftover, ignore_errors=True)
    deps = folder / "deps"
    deps.mkdir()
    for wheel in folder.glob("*.whl"):
        if parse_wheel_filename(wheel.name)[0] != PROJECT:
            wheel.rename(deps / wheel.name)
    return sorted(folder.rglob("*.whl"))


def _pip_wheel(folder: Path, targets: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), "--wheel-dir", str(folder), *targets],
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"pip wheel {' '.join(targets)} exited {done.returncode}")


def missing_requirements(folder: Path) -> set[str]:
    """Requirements of the wheels in ``folder`` that some 3.11 patch release would install
    and that no wheel there provides (extras aside: pip already resolved the ones asked
    for)."""
    wheels = list(folder.glob("*.whl"))
    have = {parse_wheel_filename(w.name)[0] for w in wheels}
    out: set[str] = set()
    for wheel in wheels:
        for req in _requires(wheel):
            if canonicalize_name(req.name) in have or req.marker is None:
                continue
            if any(req.marker.evaluate({"python_full_version": v, "extra": ""})
                   for v in PATCH_RELEASES):
                out.add(str(Requirement(f"{req.name}{req.specifier}")))
    return out


def _requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist()
                    if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode("utf-8", "replace").splitlines()
    return [Requirement(line.partition(":")[2].strip())
            for line in lines if line.startswith("Requires-Dist:")]


def main() -> None:
    folder = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else DEFAULT
    wheels = build(folder)
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 1e6:.0f} MB in {folder}")


if __name__ == "__main__":
    main()
