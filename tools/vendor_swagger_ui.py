"""Refresh the vendored Swagger UI (``make vendor``): the gateway serves its API reference
from these files, never from a CDN, so ``/docs`` works without internet.

Fetches ``swagger-ui-dist@VERSION`` with ``npm pack`` (the registry's tarball), checks the
tarball against the registry's ``integrity`` (sha512), copies the few files the page needs
and the licence notices into ``services/tradeplane/gateway/static/vendor/swagger-ui-dist/``
and writes ``LOCK.json`` next to it: name, version, tarball URL and integrity, licence,
and the sha256 of every vendored file (tests/unit/test_vendored_assets.py checks them).

Usage: python tools/vendor_swagger_ui.py [VERSION]   (default: the version in LOCK.json)
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

PACKAGE = "swagger-ui-dist"
VENDOR = Path(__file__).resolve().parent.parent / "services/tradeplane/gateway/static/vendor"
TARGET = VENDOR / PACKAGE
LOCK = VENDOR / "LOCK.json"
#: What the docs page loads, plus the package's licence, notice and the licences of the
#: third-party code inside the bundle.
FILES = (
    "swagger-ui-bundle.js",
    "swagger-ui-bundle.js.LICENSE.txt",
    "swagger-ui.css",
    "favicon-32x32.png",
    "LICENSE",
    "NOTICE",
    "package.json",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm(*args: str, cwd: Path) -> str:
    if shutil.which("npm") is None:
        sys.exit("npm is not installed: install node/npm (Debian's 'npm' package) to vendor")
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def main(argv: list[str]) -> None:
    version = argv[1] if len(argv) > 1 else json.loads(LOCK.read_text())["version"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        registry = json.loads(npm("view", f"{PACKAGE}@{version}", "--json", "dist", cwd=work))
        packed = json.loads(npm("pack", f"{PACKAGE}@{version}", "--json", cwd=work))[0]
        tarball = work / packed["filename"]
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()
                                              ).decode()
        if digest != registry["integrity"]:
            sys.exit(f"{tarball.name}: integrity {digest} is not the registry's "
                     f"{registry['integrity']}")
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        meta = json.loads((work / "package/package.json").read_text())
        if TARGET.exists():
            shutil.rmtree(TARGET)
        TARGET.mkdir(parents=True)
        for name in FILES:
            shutil.copyfile(work / "package" / name, TARGET / name)
    lock = {
        "name": PACKAGE,
        "version": meta["version"],
        "license": meta["license"],
        "tarball": registry["tarball"],
        "integrity": digest,
        "files": {name: sha256(TARGET / name) for name in FILES},
    }
    LOCK.write_text(json.dumps(lock, indent=2) + "\n")
    print(f"vendored {PACKAGE} {meta['version']} ({len(FILES)} files) into {TARGET}")


if __name__ == "__main__":
    main(sys.argv)
