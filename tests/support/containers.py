"""The tradeplane image in real containers, for tests.

* :func:`docker_unavailable` says why Docker cannot run here (``None`` when it can): the
  tests skip with that reason. CI installs ``docker.io`` and ``debootstrap`` and starts
  ``dockerd --bridge=none --iptables=false`` (``.ci/run``); containers use the host's
  network (or none), never a bridge.
* :func:`base_image`: no registry is reachable, so ``python:3.11-slim`` cannot be pulled.
  The base is Debian bookworm (its python3 is 3.11) made by ``debootstrap`` from the
  package mirror, imported with ``docker import``. The root file system is kept as a tarball
  in ``~/.cache/tradeplane/`` and the image in the daemon, so only the first run pays.
* :func:`build_image` builds the wheelhouse (``tools/wheelhouse.py``) and then the
  repository's Dockerfile on that base with ``--network none``.
* :class:`Pod` runs a Kubernetes pod spec (the chart's, the operator's) as containers the
  way a kubelet would: init containers to completion, then the containers with the spec's
  command, args, env and envFrom, user and group, read-only root, dropped capabilities, no
  privilege escalation, memory limit, emptyDirs as tmpfs, ConfigMaps as read-only folders;
  and it runs the spec's probes. What differs is the network: every container shares the
  host's, so each named port gets a free port here and the variable that sets it is
  changed to match (:func:`host_ports`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tradeplane"
SUITE = "bookworm"
#: What the Dockerfile needs of its base: python3 (3.11 in bookworm), its venv module.
BASE_PACKAGES = ("python3", "python3-venv")
BASE_TAG = f"tradeplane-test-base:{SUITE}-python3.11"
BASE_TARBALL = CACHE / f"debian-{SUITE}-minbase-{'-'.join(BASE_PACKAGES)}.tar"
MIRROR = os.environ.get("TRADEPLANE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
IMAGE_TAG = "tradeplane:e2e"
#: Folders of the base that no process reads: left out to keep the image small.
_STRIP = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
          "usr/share/locale", "usr/share/info")
#: Variables that set the port a process listens on, by the name of the port they serve.
PORT_VARIABLES = ("TRADEPLANE_HTTP_PORT", "TRADEPLANE_METRICS_PORT")


class ContainerError(RuntimeError):
    """A docker command failed, or a container did not do what its spec says."""


# ------------------------------------------------------------------------------ docker
def docker(*args: str, check: bool = True, timeout: float = 600,
           env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI (``DOCKER_HOST`` is honoured). Raises :class:`ContainerError`."""
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0", **(env or {})},
    )
    if check and done.returncode != 0:
        raise ContainerError(
            f"docker {' '.join(args[:3])} ... exited {done.returncode}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def docker_unavailable() -> str | None:
    """Why containers cannot run here, naming the package or step; ``None`` if they can."""
    if shutil.which("docker") is None:
        return ("docker is not installed (Debian's docker.io; .ci/run installs it and starts "
                "dockerd --bridge=none --iptables=false)")
    try:
        done = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return "dockerd did not answer `docker info` within 30 s"
    if done.returncode != 0:
        return (f"dockerd is not running ({done.stderr.strip()[:200]}); .ci/run starts it "
                "with --bridge=none --iptables=false")
    if docker("image", "inspect", BASE_TAG, check=False).returncode != 0 \
            and not BASE_TARBALL.exists():
        if shutil.which("debootstrap") is None:
            return "debootstrap is not installed (Debian's debootstrap; .ci/run installs it)"
        if os.geteuid() != 0:
            return "debootstrap needs root to build the image's Debian base"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class BuildFigures:
    """How long each step took (seconds; ``None``: cached) and the image's size."""

    debootstrap_s: float | None = None
    import_s: float | None = None
    wheelhouse_s: float = 0.0
    build_s: float = 0.0
    size_bytes: int = 0


def base_image(figures: BuildFigures) -> str:
    """The tag of a Debian bookworm image with python3.11, built on first use.

    Raises:
        ContainerError: debootstrap or docker import failed.
    """
    if docker("image", "inspect", BASE_TAG, check=False).returncode == 0:
        return BASE_TAG
    with _locked(CACHE / ".base.lock"):
        if not BASE_TARBALL.exists():
            started = time.monotonic()
            _debootstrap(BASE_TARBALL)
            figures.debootstrap_s = time.monotonic() - started
        started = time.monotonic()
        with BASE_TARBALL.open("rb") as tarball:
            done = subprocess.run(["docker", "import", "-", BASE_TAG], stdin=tarball,
                                  capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise ContainerError(f"docker import exited {done.returncode}: {done.stderr}")
        figures.import_s = time.monotonic() - started
    return BASE_TAG


def _debootstrap(tarball: Path) -> None:
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(rootfs), MIRROR],
            capture_output=True, text=True, timeout=1200, check=False,
        )
        if done.returncode != 0:
            raise ContainerError(f"debootstrap exited {done.returncode}:\n{done.stdout[-3000:]}"
                                 f"\n{done.stderr[-3000:]}")
        for sub in _STRIP:
            shutil.rmtree(rootfs / sub, ignore_errors=True)
        staged = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(staged), "."],
                       check=True, timeout=600)
        os.replace(staged, tarball)  # atomic: a half-written tarball is never cached


def build_image(figures: BuildFigures, tag: str = IMAGE_TAG) -> str:
    """Build the wheelhouse and the repository's Dockerfile on :func:`base_image`, with no
    network in the build; return the tag.

    Raises:
        ContainerError: the wheelhouse or the build failed.
    """
    base = base_image(figures)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "wheelhouse.py")],
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise ContainerError(f"tools/wheelhouse.py failed:\n{done.stdout}\n{done.stderr}")
    figures.wheelhouse_s = time.monotonic() - started
    started = time.monotonic()
    build_stage = f"{tag}-build"
    previous = {t: _image_id(t) for t in (tag, build_stage)}
    # The build stage gets a tag of its own: it is the layer cache of the next build (the
    # dependencies' layer), which an untagged image would lose when it is removed.
    for target, name in (("build", build_stage), (None, tag)):
        docker("build", "--network", "none", "--build-arg", f"BASE={base}", "-t", name,
               *(("--target", target) if target else ()), str(ROOT), timeout=1200)
    for name, old in previous.items():
        if old and old != _image_id(name):
            # The last run's image, with the chart's reference a test gave it: else each
            # run would leave one more 350 MB image behind.
            docker("rmi", "--force", old, check=False)
    figures.build_s = time.monotonic() - started
    figures.size_bytes = int(docker("image", "inspect", tag, "--format", "{{.Size}}")
                             .stdout.strip())
    return tag


def _image_id(tag: str) -> str | None:
    done = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def image_config(tag: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(
        docker("image", "inspect", tag, "--format", "{{json .Config}}").stdout)
    return config


# ------------------------------------------------------------------------------ pods
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_ports(container: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
    """A free port here for each of the container's named ports, and the environment that
    makes the process listen there.

    In a pod every container has its own network namespace; on the host's network two
    containers would both want 9100. The variable that sets a port must hold exactly the
    port the spec declares (else the Service and the probes would point elsewhere): that is
    checked here, then changed.

    Raises:
        ContainerError: a port no variable sets, or one set to another value.
    """
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    overrides: dict[str, str] = {}
    ports: dict[str, int] = {}
    for port in container.get("ports", []):
        setters = [n for n in PORT_VARIABLES if env.get(n) == str(port["containerPort"])]
        if len(setters) != 1:
            raise ContainerError(f"{container['name']}: port {port['name']} "
                                 f"({port['containerPort']}) is set by {setters or 'nothing'}")
        ports[port["name"]] = free_port()
        overrides[setters[0]] = str(ports[port["name"]])
    return overrides, ports


def parse_quantity(text: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1Gi``, ``64M``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", str(text))
    if match is None:
        raise ContainerError(f"unsupported quantity {text!r}")
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The container's effective security context: its own fields over the pod's."""
    merged = {k: v for k, v in (pod.get("securityContext") or {}).items()
              if k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")}
    return merged | dict(container.get("securityContext") or {})


@dataclass
class Started:
    """One container started from a spec: its docker name and how long it took to be
    ready (``None`` for an init container)."""

    name: str
    spec: dict[str, Any]
    ports: dict[str, int]
    ready_s: float | None = None


@dataclass
class Pod:
    """A pod spec run as docker containers on the host's network (see the module doc).
    Each container runs the image its spec names: the test tags the image it built with
    the reference the chart and the operator render.

    ``env_sources``: the Secrets and ConfigMaps ``envFrom`` names, by name. ``files``: a
    host folder for each ConfigMap, Secret or projected volume, by volume name.
    ``env_override``: what the test changes, on top of the spec (the servers' addresses in
    the Secret are the test's; these are for the observability endpoints and such).
    """

    name: str
    spec: dict[str, Any]
    env_sources: dict[str, dict[str, str]]
    files: dict[str, Path] = field(default_factory=dict)
    env_override: dict[str, str] = field(default_factory=dict)
    containers: dict[str, Started] = field(default_factory=dict)

    def run_args(self, container: Mapping[str, Any], docker_name: str,
                 ports_env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """``docker run`` arguments for one container and the environment they read.

        The values stay off the command line (``-e NAME`` takes them from the CLI's own
        environment), as a kubelet keeps a Secret out of ``ps``.

        Raises:
            ContainerError: a field this runner does not implement (never ignored).
        """
        sc = _security(self.spec, container)
        if sc.get("privileged"):
            raise ContainerError(f"{docker_name}: privileged")
        args = ["run", "--detach", "--name", docker_name, "--network", "host"]
        image = str(container["image"])
        user = sc.get("runAsUser")
        if user is None:
            user = _image_user(image)
        if sc.get("runAsNonRoot") and (not str(user).isdigit() or int(user) == 0):
            # The kubelet refuses it: it cannot check a user name is not root.
            raise ContainerError(f"{docker_name}: runAsNonRoot with user {user!r}")
        group = sc.get("runAsGroup")
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
        if (fs_group := (self.spec.get("securityContext") or {}).get("fsGroup")) is not None:
            args += ["--group-add", str(fs_group)]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        caps = sc.get("capabilities") or {}
        args += [a for cap in caps.get("drop", []) for a in ("--cap-drop", cap)]
        args += [a for cap in caps.get("add", []) for a in ("--cap-add", cap)]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        if seccomp != "RuntimeDefault":  # docker's default profile is the runtime default
            raise ContainerError(f"{docker_name}: seccomp profile {seccomp}")
        limits = (container.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            args += ["--memory", str(parse_quantity(limits["memory"]))]
        if "cpu" in limits:
            cpu = str(limits["cpu"])
            args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
        # Kubernetes' default grace period is 30 s (docker's 10 s).
        args += ["--stop-timeout", str(self.spec.get("terminationGracePeriodSeconds", 30))]
        args += self._mounts(container, docker_name)
        env = self._environment(container) | dict(ports_env) | self.env_override
        args += [a for name in sorted(env) for a in ("-e", name)]
        if wd := container.get("workingDir"):
            args += ["--workdir", wd]
        command = list(container.get("command") or [])
        cmd_args = [str(a) for a in container.get("args") or []]
        if any("$(" in a for a in (*command, *cmd_args)):
            raise ContainerError(f"{docker_name}: $(VAR) expansion is not implemented")
        if command:
            args += ["--entrypoint", command[0], image, *command[1:], *cmd_args]
        else:
            args += [image, *cmd_args]
        return args, env

    def _mounts(self, container: Mapping[str, Any], docker_name: str) -> list[str]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        out: list[str] = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            path = mount["mountPath"]
            if "emptyDir" in volume:
                # An emptyDir (on disk or in memory) is a tmpfs here, with the spec's limit;
                # like the kubelet's it is writable by everyone and allows exec.
                size = parse_quantity((volume["emptyDir"] or {}).get("sizeLimit", "64Mi"))
                out += ["--tmpfs", f"{path}:rw,exec,nosuid,nodev,size={size},mode=1777"]
            elif {"configMap", "secret", "projected"} & volume.keys():
                if mount["name"] not in self.files:
                    raise ContainerError(f"{docker_name}: no files for volume {mount['name']}")
                out += ["--volume", f"{self.files[mount['name']]}:{path}:ro"]
            else:
                raise ContainerError(f"{docker_name}: volume {volume} is not implemented")
        return out

    def _environment(self, container: Mapping[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            ref = source.get("secretRef") or source.get("configMapRef")
            if ref is None or ref["name"] not in self.env_sources:
                raise ContainerError(f"envFrom {source}: not given to the pod")
            env |= self.env_sources[ref["name"]]
        for var in container.get("env", []):  # env wins over envFrom, as in Kubernetes
            if "value" not in var:
                raise ContainerError(f"env {var['name']}: valueFrom is not implemented")
            env[var["name"]] = str(var["value"])
        return env

    # -------------------------------------------------------------------- lifecycle
    def _docker_name(self, container: Mapping[str, Any]) -> str:
        return f"tp-e2e-{self.name}-{container['name']}"

    def run_init_containers(self, timeout: float = 120) -> None:
        """Each init container in order, to exit 0, as the kubelet does before the others.

        Raises:
            ContainerError: one exited non-zero (its log is in the message).
        """
        self._run_to_completion(self.spec.get("initContainers", []), timeout)

    def run_to_completion(self, timeout: float = 120) -> None:
        """The containers of a Job's pod, in order, each to exit 0.

        Raises:
            ContainerError: one exited non-zero (its log is in the message).
        """
        self._run_to_completion(self.spec["containers"], timeout)

    def _run_to_completion(self, containers: list[dict[str, Any]], timeout: float) -> None:
        for container in containers:
            name = self._docker_name(container)
            args, env = self.run_args(container, name, {})
            docker("rm", "--force", name, check=False)
            docker(*args, env=env)
            code = docker("wait", name, timeout=timeout).stdout.strip()
            if code != "0":
                raise ContainerError(f"{name} exited {code}:\n{self.log(name)}")
            docker("rm", name)

    def start(self) -> None:
        """Start every container of the pod (after :meth:`run_init_containers`)."""
        for container in self.spec["containers"]:
            name = self._docker_name(container)
            ports_env, ports = host_ports(container)
            args, env = self.run_args(container, name, ports_env)
            docker("rm", "--force", name, check=False)
            docker(*args, env=env)
            self.containers[container["name"]] = Started(name, dict(container), ports)

    def wait_ready(self, timeout: float = 120) -> None:
        """Run each container's startup probe, then its readiness probe, until they pass;
        then its liveness probe once. Records how long each took to be ready.

        Raises:
            ContainerError: a container exited or a probe did not pass in time.
        """
        for started in self.containers.values():
            begun = time.monotonic()
            for kind in ("startupProbe", "readinessProbe"):
                if probe := started.spec.get(kind):
                    self._until(started, kind, probe, begun + timeout)
            started.ready_s = time.monotonic() - begun
            liveness = started.spec.get("livenessProbe")
            if liveness and not self.probe(started, liveness):
                raise ContainerError(f"{started.name}: livenessProbe fails once ready")

    def _until(self, started: Started, kind: str, probe: Mapping[str, Any],
               deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.probe(started, probe):
                return
            if not self.running(started.name):
                raise ContainerError(f"{started.name} exited before its {kind} passed:\n"
                                     f"{self.log(started.name)}")
            time.sleep(0.2)
        raise ContainerError(f"{started.name}: {kind} did not pass:\n{self.log(started.name)}")

    def probe(self, started: Started, probe: Mapping[str, Any]) -> bool:
        """One run of a probe (httpGet, tcpSocket or exec), as the kubelet runs it."""
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = get["port"]
            port = started.ports[port] if isinstance(port, str) else port
            url = f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{port}{get.get('path', '/')}"
            try:
                return 200 <= httpx.get(url, timeout=timeout).status_code < 400
            except httpx.HTTPError:
                return False
        if "tcpSocket" in probe:
            port = probe["tcpSocket"]["port"]
            port = started.ports[port] if isinstance(port, str) else port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
                return True
            except OSError:
                return False
        if "exec" in probe:
            done = docker("exec", started.name, *probe["exec"]["command"], check=False,
                          timeout=timeout + 10)
            return done.returncode == 0
        raise ContainerError(f"{started.name}: probe {probe} is not implemented")

    def running(self, name: str) -> bool:
        done = docker("inspect", "--format", "{{.State.Running}}", name, check=False)
        return done.stdout.strip() == "true"

    def log(self, name: str) -> str:
        done = docker("logs", "--tail", "60", name, check=False)
        return done.stdout + done.stderr

    def kill(self, container: str) -> None:
        """``docker kill``: SIGKILL, as when a node dies or the OOM killer strikes."""
        docker("kill", self.containers[container].name)

    def restart(self, container: str) -> None:
        """Start the same container again, as the kubelet restarts a crashed one."""
        docker("start", self.containers[container].name)

    def stop(self, container: str) -> int:
        """``docker stop`` (SIGTERM to PID 1, then SIGKILL after the grace period): the
        exit code, 0 for a clean shutdown."""
        name = self.containers[container].name
        docker("stop", name, timeout=120)
        return int(docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())

    def remove(self) -> None:
        for started in self.containers.values():
            docker("rm", "--force", started.name, check=False)
        self.containers.clear()


def _image_user(image: str) -> str:
    return str(image_config(image).get("User") or "0").split(":")[0]


def write_files(folder: Path, data: Mapping[str, str]) -> Path:
    """A ConfigMap's or Secret's data as files in ``folder``, readable by the pod's user."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for key, value in data.items():
        path = folder / key
        path.write_text(value)
        path.chmod(0o644)
    return folder
