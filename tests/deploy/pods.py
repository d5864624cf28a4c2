"""Run the rendered Deployments' containers as pods on this machine, for tests/deploy/test_pods.py.

Each service runs with exactly the command (the image's ENTRYPOINT + the container's `args`),
environment and ports its manifest gives it, as the pod's user and groups. What a node would
provide is provided the nearest way a test can:

- **The pod network.** All six share one network namespace made for the test (`unshare`), so
  the manifests' fixed ports (50051…, 8080, 9101…) collide with nothing else on the machine.
  A mount namespace beside it maps each Service's cluster name (`auth.saga.svc.cluster.local`)
  to 127.0.0.1 in its own /etc/hosts. PostgreSQL and Redis are bridged in: a listener on
  127.0.0.1:5432 (and :6379) inside the namespace forwards to the suite's servers.
- **Volumes.** A directory per volume; a mount path the manifest gives (`/etc/saga/tls`) is
  replaced by that directory wherever it appears in the environment and in the ConfigMap's
  files. Secrets get test material made here (the dev CA's certificates, a fresh context key
  and vault keyring), root-owned with the fsGroup and `defaultMode | 0440`, as kubelet
  writes them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.identity import SERVICES
from services.common.pki import ensure_dev_pki, service_cert_paths
from tests.deploy.manifests import Manifest, container, entrypoint
from tests.harness import ROOT

CLONE_NEWNET = 0x40000000
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
"""What the image's ENV sets besides PATH and PYTHONPATH (the checkout's virtualenv stands
in for /venv, and its .pth file for PYTHONPATH=/app:/app/gen/python)."""


@dataclass
class Pod:
    """One running container of a rendered Deployment."""

    service: str
    spec: Manifest
    process: subprocess.Popen[bytes]
    log: Path
    volumes: dict[str, Path]
    grace_seconds: float

    def read_log(self) -> str:
        """What the container wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Node:
    """The namespaces, bridges and volumes the pods of one test run on."""

    root: Path
    holder: subprocess.Popen[bytes]
    servers: list[asyncio.base_events.Server] = field(default_factory=list)
    pods: dict[str, Pod] = field(default_factory=dict)

    @property
    def netns(self) -> str:
        """The pods' network namespace, for `nsenter --net=`."""
        return f"/proc/{self.holder.pid}/ns/net"

    def enter(self) -> list[str]:
        """The command prefix that runs a process inside the pods' namespaces."""
        mount = f"/proc/{self.holder.pid}/ns/mnt"
        return ["nsenter", f"--net={self.netns}", f"--mount={mount}", "--"]


def secret_material(root: Path) -> Callable[[str], dict[str, bytes]]:
    """The files of each secret the manifests mount: made here, never taken from a cluster."""
    pki = root / "pki"
    ensure_dev_pki(pki, list(SERVICES))
    context = Ed25519PrivateKey.generate()
    context_files = {
        "context.key": context.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "context.pub": context.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    key_id = f"k_{secrets.token_hex(4)}"
    keyring = {key_id: base64.b64encode(os.urandom(32)), "active": key_id.encode()}

    def files(name: str) -> dict[str, bytes]:
        if name.startswith("saga-tls-"):
            cert, key, ca = service_cert_paths(pki, name.removeprefix("saga-tls-")).read()
            return {"tls.crt": cert, "tls.key": key, "ca.crt": ca}
        if name == "saga-context-key":
            return context_files
        if name == "saga-vault-keys":
            return keyring
        raise AssertionError(f"a manifest mounts secret {name}, which this test cannot make")

    return files


def _listen_inside(netns: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` in namespace `netns` (a socket stays in the
    namespace it was made in, so one thread enters it, makes it and comes back)."""
    libc = ctypes.CDLL(None, use_errno=True)
    made: list[socket.socket] = []
    failure: list[BaseException] = []

    def inside() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the pods' network namespace")
            try:
                made.append(socket.create_server(("127.0.0.1", port)))
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        except BaseException as error:
            failure.append(error)
        finally:
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    made[0].setblocking(False)
    return made[0]


async def bridge(node: Node, port: int, upstream: tuple[str, int]) -> None:
    """Forward connections to 127.0.0.1:`port` inside the pods' namespace to `upstream`."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    sock = _listen_inside(node.netns, port)
    node.servers.append(await asyncio.start_server(forward, sock=sock))


def _hosts(deployments: dict[str, Manifest]) -> str:
    names = ["localhost", *(f"{s}.saga.svc.cluster.local" for s in deployments), *deployments]
    return "127.0.0.1 " + " ".join(names) + "\n::1 localhost\n"


def _namespaces(deployments: dict[str, Manifest]) -> tuple[Path, subprocess.Popen[bytes]]:
    """A volume root, and a process holding the pods' network and mount namespaces: loopback
    up, /etc/hosts naming the Services. `sleep` bounds their life if this process is killed."""
    assert os.geteuid() == 0, "running pods needs root (network namespaces), as in CI"
    root = Path(tempfile.mkdtemp(prefix="saga-pods-"))
    root.chmod(0o755)  # the pods' user must reach its volumes
    (root / "hosts").write_text(_hosts(deployments))
    script = 'ip link set lo up && mount --bind "$1" /etc/hosts && touch "$2" && exec sleep 900'
    unshare = ["unshare", "--net", "--mount", "--propagation", "private", "--"]
    holder = subprocess.Popen(
        [*unshare, "sh", "-c", script, "sh", str(root / "hosts"), str(root / "ready")]
    )
    return root, holder


@contextlib.asynccontextmanager
async def node(deployments: dict[str, Manifest]) -> AsyncIterator[Node]:
    """The namespaces for `deployments`' pods (the caller must be root, as a node is)."""
    root, holder = _namespaces(deployments)
    ready = root / "ready"
    the_node = Node(root=root, holder=holder)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert holder.poll() is None, f"unshare exited with {holder.returncode}"
            assert time.monotonic() < deadline, "the namespaces were not ready in 10 s"
            await asyncio.sleep(0.05)
        yield the_node
    finally:
        await asyncio.to_thread(stop_pods, the_node)
        for server in the_node.servers:
            server.close()
        holder.kill()
        holder.wait()
        shutil.rmtree(root, ignore_errors=True)


def _pod_security(deployment: Manifest) -> tuple[int, int, int]:
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    return security["runAsUser"], security["runAsGroup"], security["fsGroup"]


def _write_volume(
    directory: Path,
    volume: Manifest,
    config_maps: dict[str, Manifest],
    secret_files: Callable[[str], dict[str, bytes]],
    fs_group: int,
    rewrite: Callable[[str], str],
) -> None:
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    if "emptyDir" in volume:
        os.chown(directory, 0, fs_group)
        directory.chmod(0o2777)  # kubelet's emptyDir: world-writable, setgid to the fsGroup
        return
    if "configMap" in volume:
        data = config_maps[volume["configMap"]["name"]]["data"]
        for name, text in data.items():
            (directory / name).write_text(rewrite(text))
            (directory / name).chmod(0o644)
        return
    secret = volume["secret"]
    files = secret_files(secret["secretName"])
    chosen = {item["key"]: item["path"] for item in secret.get("items", [])} or {
        k: k for k in files
    }
    mode = int(secret.get("defaultMode", 0o644)) | 0o440  # kubelet's fsGroup read bits
    for key, path in chosen.items():
        target = directory / path
        target.write_bytes(files[key])
        os.chown(target, 0, fs_group)
        target.chmod(mode)


def as_user(deployment: Manifest) -> list[str]:
    """The command prefix that runs a process as the pod's user, group and fsGroup."""
    user, group, fs_group = _pod_security(deployment)
    return ["setpriv", f"--reuid={user}", f"--regid={group}", f"--groups={fs_group}", "--"]


def check_reachable(deployment: Manifest) -> None:
    """Fail with the fix when the pod's user cannot run this checkout's code (a home
    directory that others cannot search, say), rather than with six crashed pods."""
    probe = [sys.executable, "-c", "import services.common.config"]
    result = subprocess.run(
        [*as_user(deployment), *probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (
        f"the pods' user cannot import the code in {ROOT} with {sys.executable}; make every "
        f"directory above them searchable (chmod o+x):\n{result.stderr[-2000:]}"
    )


def start_pod(
    the_node: Node,
    deployment: Manifest,
    config_maps: dict[str, Manifest],
    secret_files: Callable[[str], dict[str, bytes]],
    secret_values: dict[tuple[str, str], str],
) -> Pod:
    """Start `deployment`'s container in the node's namespaces, as its pod's user."""
    service = deployment["metadata"]["name"]
    spec = container(deployment)
    _, _, fs_group = _pod_security(deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    pod_dir = the_node.root / service
    mounts = {m["mountPath"]: pod_dir / m["name"] for m in spec["volumeMounts"]}
    pattern = re.compile(
        "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True)) + r"(?=/|\b|$)"
    )

    def rewrite(text: str) -> str:
        return pattern.sub(lambda m: str(mounts[m.group(0)]), text)

    for mount in spec["volumeMounts"]:
        _write_volume(
            pod_dir / mount["name"],
            volumes[mount["name"]],
            config_maps,
            secret_files,
            fs_group,
            rewrite,
        )
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", **IMAGE_ENV}
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = rewrite(variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secret_values[(ref["name"], ref["key"])]
    command = entrypoint()
    assert command[0] == "python", command
    argv = [sys.executable, *command[1:], *spec.get("args", [])]
    log = the_node.root / f"{service}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*the_node.enter(), *as_user(deployment), *argv],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    grace = float(deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))
    pod = Pod(
        service,
        spec,
        process,
        log,
        {m["name"]: pod_dir / m["name"] for m in spec["volumeMounts"]},
        grace,
    )
    the_node.pods[service] = pod
    return pod


def stop_pods(the_node: Node) -> dict[str, int]:
    """SIGTERM every pod, as the kubelet does, then SIGKILL one still running after its
    terminationGracePeriodSeconds; the exit codes (-9 for a killed one)."""
    for pod in the_node.pods.values():
        if pod.process.poll() is None:
            pod.process.terminate()
    codes = {}
    for service, pod in the_node.pods.items():
        try:
            codes[service] = pod.process.wait(pod.grace_seconds)
        except subprocess.TimeoutExpired:
            pod.process.kill()
            codes[service] = pod.process.wait()
    return codes


async def kubelet(the_node: Node, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run tests/deploy/kubelet.py inside the pods' network namespace on `items`."""
    process = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net={the_node.netns}",
        "--",
        sys.executable,
        "-m",
        "tests.deploy.kubelet",
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate(json.dumps(items).encode())
    assert process.returncode == 0, err.decode()
    result: dict[str, dict[str, Any]] = json.loads(out)
    return result


def status(pid: int, field: str) -> list[str]:
    """One line of /proc/`pid`/status, split (`VmRSS` → ["70564", "kB"], `Uid` → 4 ids)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split()[1:]
    raise AssertionError(f"no {field} for {pid}")
