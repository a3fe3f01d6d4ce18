"""The vendored browser code (Swagger UI behind ``/docs``; lightweight-charts and uqr behind
the trading UI) is exactly what LOCK.json records (refresh it with ``make vendor``), ships
its licences and notices, and is package data (installed with the package, not only in a
checkout)."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from tradeplane.gateway import apidoc

STATIC = Path(str(apidoc.STATIC_DIR))
VENDOR = STATIC / "vendor"
PACKAGES = json.loads((VENDOR / "LOCK.json").read_text())["packages"]
ROOT = Path(__file__).resolve().parents[2]
#: The licences we accept for code shipped to browsers (permissive, attribution only).
PERMISSIVE = {"Apache-2.0", "MIT"}


def test_the_lock_lists_exactly_the_vendored_folders() -> None:
    assert set(PACKAGES) == {"swagger-ui-dist", "lightweight-charts", "uqr"}
    assert {p.name for p in VENDOR.iterdir() if p.is_dir()} == set(PACKAGES)


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_every_vendored_file_has_the_recorded_hash(name: str) -> None:
    folder, lock = VENDOR / name, PACKAGES[name]
    assert {p.name for p in folder.iterdir()} == set(lock["files"])
    for file, digest in lock["files"].items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, file


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_the_lock_names_the_npm_package_and_its_tarball(name: str) -> None:
    lock = PACKAGES[name]
    assert re.fullmatch(r"\d+\.\d+\.\d+", lock["version"])
    assert lock["tarball"] == (f"https://registry.npmjs.org/{name}/-/"
                               f"{name}-{lock['version']}.tgz")
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", lock["integrity"])
    package = json.loads((VENDOR / name / "package.json").read_text())
    assert (package["name"], package["version"], package["license"]) == (
        name, lock["version"], lock["license"])
    assert lock["license"] in PERMISSIVE


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_every_package_ships_its_licence(name: str) -> None:
    licence = (VENDOR / name / "LICENSE").read_text()
    expected = {"Apache-2.0": "Apache License", "MIT": "MIT License"}[PACKAGES[name]["license"]]
    assert expected in licence


def test_the_notices_and_attributions_are_shipped() -> None:
    assert "SmartBear" in (VENDOR / "swagger-ui-dist/NOTICE").read_text()
    # the licences of the third-party code inside the Swagger UI bundle
    assert (VENDOR / "swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt").stat().st_size > 0
    # TradingView asks for its attribution notice and a link to it on the page: the
    # package's README says so (shipped), the charts keep their logo link, and every UI
    # page shows the notice.
    assert "attribution notice" in (VENDOR / "lightweight-charts/README.md").read_text()
    assert "TradingView, Inc." in (VENDOR / "lightweight-charts/LICENSE").read_text()
    for page in (STATIC / "ui").glob("*.html"):
        text = page.read_text()
        assert "TradingView Lightweight Charts" in text and "tradingview.com" in text, page


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
