"""What the benchmarks (and the tests that start processes) share: settings for the embedded services,
each benchmark in its own database, and real api processes on them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.lib.embedded import ROOT, free_port

# Settings a child process must take from `process_env`, never from the caller's environment.
SETTING_PREFIXES = ("APP_", "MONGODB_", "REDIS_", "S3_", "CHAIN_", "AUTH_", "WORKER_", "STREAM_", "WEBHOOK_")


def bench_settings(services: dict[str, str | None], data_dir: Path, name: str, **sections: Any) -> Settings:
    """Settings for a benchmark named `name` over `services` (its own database and bucket), quiet logs;
    `sections` add to or replace a section (`auth={...}`, `chain={...}`)."""
    base: dict[str, Any] = {
        "mongodb": {"url": services["mongodb"], "database": f"dynamicvault_bench_{name}"},
        "redis": {"url": services["redis"]},
        "s3": {"endpoint_url": services["s3"], "bucket": f"dynamicvault-bench-{name}"},
    }
    if services.get("chain"):
        base["chain"] = {"rpc_url": services["chain"]}
    return Settings(
        _env_file=None, app_env="test", data_dir=data_dir, log_level="WARNING", **{**base, **sections}
    )


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process (api or worker) on these settings' services, database and bucket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(
        APP_ENV="test",
        LOG_LEVEL=extra.pop("LOG_LEVEL", "ERROR"),
        DATA_DIR=str(settings.data_dir),
        MONGODB_URL=settings.mongodb.url or "",
        MONGODB_DATABASE=settings.mongodb.database,
        REDIS_URL=settings.redis.url or "",
        S3_ENDPOINT_URL=settings.s3.endpoint_url or "",
        S3_BUCKET=settings.s3.bucket,
        **extra,
    )
    return env


@contextmanager
def api_process(settings: Settings, log_path: Path | None = None, **extra_env: str) -> Iterator[str]:
    """A real api process (`uvicorn app.main:create_app`) on a free port: its base URL once its health
    answers 200; terminated on exit."""
    port = free_port()
    env = process_env(settings, AUTH_COOKIE_SECURE="false", **extra_env)
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    log = log_path.open("ab") if log_path is not None else None
    process = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT if log else None
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/api/system/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:] if log_path is not None else ""
                raise RuntimeError(f"the api process on port {port} did not start\n{tail}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None:
            log.close()
