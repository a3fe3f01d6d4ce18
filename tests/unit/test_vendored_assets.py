"""The vendored Swagger UI behind ``/docs`` is exactly what LOCK.json records (refresh it
with ``make vendor``), ships its licence and notices, and is package data (installed with
the package, not only in a checkout)."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path, PurePosixPath

from tradeplane.gateway import apidoc

STATIC = Path(str(apidoc.STATIC_DIR))
VENDOR = STATIC / "vendor"
LOCK = json.loads((VENDOR / "LOCK.json").read_text())
ROOT = Path(__file__).resolve().parents[2]


def test_every_vendored_file_has_the_recorded_hash() -> None:
    folder = VENDOR / LOCK["name"]
    assert {p.name for p in folder.iterdir()} == set(LOCK["files"])
    for name, digest in LOCK["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_the_lock_names_the_npm_package_and_its_tarball() -> None:
    assert LOCK["name"] == "swagger-ui-dist"
    assert re.fullmatch(r"\d+\.\d+\.\d+", LOCK["version"])
    assert LOCK["tarball"] == (f"https://registry.npmjs.org/swagger-ui-dist/-/"
                               f"swagger-ui-dist-{LOCK['version']}.tgz")
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", LOCK["integrity"])
    package = json.loads((VENDOR / "swagger-ui-dist/package.json").read_text())
    assert (package["name"], package["version"], package["license"]) == (
        LOCK["name"], LOCK["version"], LOCK["license"])


def test_the_licence_and_notices_are_shipped() -> None:
    folder = VENDOR / LOCK["name"]
    assert LOCK["license"] == "Apache-2.0"
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "SmartBear" in (folder / "NOTICE").read_text()
    # the licences of the third-party code inside the bundle
    assert (folder / "swagger-ui-bundle.js.LICENSE.txt").stat().st_size > 0


def test_the_page_loads_only_the_gateways_files() -> None:
    page = (STATIC / "docs.html").read_text()
    assert "http://" not in page and "https://" not in page
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and all('src="static/' in tag for tag in scripts)  # nothing inline
    for ref in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (STATIC.parent / ref).is_file(), ref


def test_the_static_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tradeplane"]
    package_root = STATIC.parent.parent  # services/tradeplane
    for path in STATIC.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = PurePosixPath(path.relative_to(package_root).as_posix())
            # setuptools' globs: ``*`` stays within one folder, as in PurePath.match
            assert any(len(PurePosixPath(p).parts) == len(relative.parts)
                       and relative.match(p) for p in patterns), relative
