"""Engines of a test's own, beside the shared one: a second ``dockerd`` that only speaks
TLS on 127.0.0.1, and a Podman API service on a unix socket; certificates from
``openssl``.

Each lives in a temporary folder of its own (data, state, sockets) and its owner's
:meth:`stop` leaves nothing: containers removed, the process ended (its whole process
group), what it mounted under the folder unmounted, the folder removed. Both need
root (``dockerd`` always; Podman for the storage and cgroups used here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from .daemon import free_port
from .waiting import wait_for


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class CertSet:
    """A CA and the server and client certificates it signed (PEM files)."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_dir(self, dest: Path, ca: Path | None = None) -> Path:
        """A folder as ``DOCKER_CERT_PATH`` expects it (``ca.pem``, ``cert.pem``,
        ``key.pem``): this set's client certificate, trusting ``ca`` (default: this CA)."""
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca or self.ca, dest / "ca.pem")
        shutil.copyfile(self.client_cert, dest / "cert.pem")
        shutil.copyfile(self.client_key, dest / "key.pem")
        return dest


def make_certs(folder: Path, name: str = "test") -> CertSet:
    """A new CA (``CN=<name>-ca``), a server certificate for 127.0.0.1 and localhost and
    a client certificate, with ``openssl`` (EC P-256 keys: a fraction of a second)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = folder / "ca.pem", folder / "ca-key.pem"
    subject = ["-subj", f"/CN={name}-ca", "-keyout", str(ca_key), "-out", str(ca)]
    _run(["openssl", "req", "-x509", *ec, "-days", "2", *subject])

    def signed(role: str, subject: str, extensions: str) -> tuple[Path, Path]:
        key, cert = folder / f"{role}-key.pem", folder / f"{role}.pem"
        csr = folder / f"{role}.csr"
        ext = folder / f"{role}.ext"
        ext.write_text(extensions)
        _run(["openssl", "req", *ec, "-subj", subject, "-keyout", str(key), "-out", str(csr)])
        ca_args = ["-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2"]
        out = ["-extfile", str(ext), "-out", str(cert)]
        _run(["openssl", "x509", "-req", "-in", str(csr), *ca_args, *out])
        return cert, key

    server = signed(
        "server",
        "/CN=localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = signed("client", f"/CN={name}-client", "extendedKeyUsage=clientAuth\n")
    return CertSet(ca, ca_key, server[0], server[1], client[0], client[1])


# -- cleanup ------------------------------------------------------------------------------


def unmount_under(root: Path) -> list[str]:
    """Unmount everything mounted at or below ``root`` (deepest first); what was unmounted."""
    prefix = str(root.resolve())
    points = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    done = []
    for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        done.append(point)
    return done


def _end_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of the group still there


def _remove_all_containers(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


# -- a second dockerd with TLS ------------------------------------------------------------


class TlsDockerd:
    """``dockerd --tlsverify`` on ``tcp://127.0.0.1:<port>`` with its own data root, exec
    root (and so its own containerd), pid file, a bridge of its own, no iptables, ``vfs``
    storage. Its containers run with ``network_mode="none"``.

    Never ``--bridge none``: a dockerd started so deletes the host's ``docker0`` (moby's
    ``removeDefaultBridgeInterface``), and every later container of the shared engine on
    the default network fails to start ("could not find bridge docker0")."""

    def __init__(self, certs: CertSet) -> None:
        self.certs = certs
        self.root = Path(tempfile.mkdtemp(prefix="lc-dockerd-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self.bridge = f"lc-br{self.port}"  # at most 15 characters (IFNAMSIZ)

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def start(self, timeout: float = 60) -> TlsDockerd:
        c = self.certs
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "172.31.254.1/24", "dev", self.bridge], check=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "dockerd",
                    *("--data-root", str(self.root / "data")),
                    *("--exec-root", str(self.root / "exec")),
                    *("--pidfile", str(self.root / "pid")),
                    *("-H", self.host, "--tlsverify", "--tlscacert", str(c.ca)),
                    *("--tlscert", str(c.server_cert), "--tlskey", str(c.server_key)),
                    *("--bridge", self.bridge, "--iptables=false", "--ip6tables=false"),
                    *("--ip-masq=false", "--storage-driver", "vfs", "--log-driver", "json-file"),
                    *("--log-level", "warn"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log.read_text()[-3000:]}")
            try:
                return bool(self.client().ping())
            except (docker.errors.DockerException, OSError):
                return False

        wait_for(up, timeout=timeout, interval=0.2, what="the TLS dockerd answers")
        return self

    def client(self) -> docker.DockerClient:
        if self._client is None:
            c = self.certs
            tls = docker.tls.TLSConfig(
                client_cert=(str(c.client_cert), str(c.client_key)), ca_cert=str(c.ca), verify=True
            )
            self._client = docker.DockerClient(
                base_url=f"https://127.0.0.1:{self.port}", tls=tls, version="1.41"
            )
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on many hosts) win
            # over the session's CA: the test CA would be ignored.
            self._client.api.trust_env = False
        return self._client

    def load_image(self, source: docker.DockerClient, image: str) -> None:
        """Copy ``image`` from ``source`` (the shared engine) into this one."""
        data = b"".join(source.images.get(image).save(named=True))
        self.client().images.load(data)

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                _remove_all_containers(self.client())
        finally:
            if self._client is not None:
                self._client.close()
            if self.proc is not None:
                _end_group(self.proc)
            unmount_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)


# -- Podman's API service -----------------------------------------------------------------


PODMAN_IMAGE = "localhost/log-capturer-test/busybox:1"


class PodmanService:
    """``podman system service --time=0`` on a unix socket of its own, with its own
    storage (``vfs``), run and tmp folders, so it shares nothing with other Podman use
    on the host. The host must allow ``podman run`` (scripts/ensure_podman.sh)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lc-podman-"))
        self.socket = self.root / "api.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None

    @property
    def podman(self) -> list[str]:
        """The podman command line on this service's storage."""
        r = self.root
        return [
            "podman",
            *("--root", str(r / "storage"), "--runroot", str(r / "run")),
            *("--tmpdir", str(r / "tmp"), "--storage-driver", "vfs"),
            *("--cgroup-manager", "cgroupfs", "--events-backend", "file"),
        ]

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.root / "service.log"

    def start(self, timeout: float = 60) -> PodmanService:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.podman, "system", "service", "--time=0", self.host],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"podman service exited: {self.log.read_text()[-3000:]}")
            try:
                return bool(self.client().ping())
            except (docker.errors.DockerException, OSError):
                return False

        wait_for(up, timeout=timeout, interval=0.2, what="the Podman service answers")
        return self

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, version="1.41")
        return self._client

    def import_busybox(self, image: str = PODMAN_IMAGE) -> str:
        """``podman import`` of a root filesystem with Debian's static busybox, as
        scripts/make_test_image.sh builds the test image for Docker."""
        busybox = next(
            p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).is_file()
        )
        rootfs = self.root / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        (rootfs / "etc").mkdir()
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        for applet in ("sh", "echo", "seq", "sleep", "cat", "printf", "yes", "head", "true"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run([*self.podman, "import", "-c", "ENV PATH=/bin", "-", image], stdin=tar.stdout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
        shutil.rmtree(rootfs)
        return image

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                _remove_all_containers(self.client())
        finally:
            if self._client is not None:
                self._client.close()
            if self.proc is not None:
                _end_group(self.proc)
            # conmon processes of containers that could not be removed, if any
            subprocess.run([*self.podman, "rm", "-af", "-t", "0"], capture_output=True, check=False)
            unmount_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
