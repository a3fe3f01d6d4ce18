"""Refresh the vendored third-party browser code (``make vendor``): the gateway serves the
API reference (Swagger UI) and the trading UI (its charts and QR codes) from these files,
never from a CDN, so ``/docs`` and ``/`` work without internet.

For each package of :data:`PACKAGES`: fetches ``NAME@VERSION`` with ``npm pack`` (the
registry's tarball), checks the tarball against the registry's ``integrity`` (sha512),
copies the few files the pages need and the licence notices into
``services/tradeplane/gateway/static/vendor/NAME/`` and records it in the one
``LOCK.json`` next to them: per package its version, tarball URL and integrity, licence,
and the sha256 of every vendored file (tests/unit/test_vendored_assets.py checks them).

Usage: python tools/vendor_npm.py [NAME@VERSION ...]
(default: every package at the version in LOCK.json; a NAME@VERSION moves that one.)
Needs node's ``npm`` and the npm registry; stdlib only otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "services/tradeplane/gateway/static/vendor"
LOCK = VENDOR / "LOCK.json"
#: Per package: the files a page loads, plus the package's licence and notices (and, for
#: a bundle, the licences of the third-party code inside it). ``(source, target)`` when
#: the vendored name differs from the file in the tarball.
PACKAGES: dict[str, tuple[str | tuple[str, str], ...]] = {
    "swagger-ui-dist": (
        "swagger-ui-bundle.js",
        "swagger-ui-bundle.js.LICENSE.txt",
        "swagger-ui.css",
        "favicon-32x32.png",
        "LICENSE",
        "NOTICE",
        "package.json",
    ),
    # Candles and the depth chart of the trading UI (an ES module, no dependencies).
    "lightweight-charts": (
        ("dist/lightweight-charts.standalone.production.mjs", "lightweight-charts.mjs"),
        "LICENSE",
        "README.md",  # its "License" section: the attribution TradingView asks for
        "package.json",
    ),
    # QR codes of deposit addresses and 2FA secrets (an ES module, no dependencies).
    "uqr": (
        ("dist/index.mjs", "uqr.mjs"),
        "LICENSE",
        "package.json",
    ),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm(*args: str, cwd: Path) -> str:
    if shutil.which("npm") is None:
        sys.exit("npm is not installed: install node/npm (Debian's 'npm' package) to vendor")
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def _names(files: tuple[str | tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [(f, f) if isinstance(f, str) else f for f in files]


def vendor(name: str, version: str) -> dict[str, object]:
    """Fetch, check and copy one package; its lock entry."""
    target = VENDOR / name
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        registry = json.loads(npm("view", f"{name}@{version}", "--json", "dist", cwd=work))
        packed = json.loads(npm("pack", f"{name}@{version}", "--json", cwd=work))[0]
        tarball = work / packed["filename"]
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()
                                              ).decode()
        if digest != registry["integrity"]:
            sys.exit(f"{tarball.name}: integrity {digest} is not the registry's "
                     f"{registry['integrity']}")
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        meta = json.loads((work / "package/package.json").read_text())
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for source, dest in _names(PACKAGES[name]):
            shutil.copyfile(work / "package" / source, target / dest)
    print(f"vendored {name} {meta['version']} into {target}")
    return {
        "version": meta["version"],
        "license": meta["license"],
        "tarball": registry["tarball"],
        "integrity": digest,
        "files": {dest: sha256(target / dest) for _, dest in _names(PACKAGES[name])},
    }


def main(argv: list[str]) -> None:
    old = json.loads(LOCK.read_text())["packages"] if LOCK.exists() else {}
    wanted = dict(arg.rsplit("@", 1) for arg in argv[1:])
    unknown = set(wanted) - set(PACKAGES)
    if unknown:
        sys.exit(f"not a vendored package: {', '.join(sorted(unknown))}")
    packages = {}
    for name in PACKAGES:
        version = wanted.get(name) or old.get(name, {}).get("version")
        if version is None:
            sys.exit(f"{name}: no version in LOCK.json; name one: {name}@VERSION")
        packages[name] = vendor(name, version)
    LOCK.write_text(json.dumps({"packages": packages}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv)
