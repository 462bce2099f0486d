"""`make run` end to end: it starts everything, serves, stops every child on SIGTERM and keeps data."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from app.lib.embedded import ROOT, free_port, s3_client

START_TIMEOUT_S = 90


def start_platform(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "REDIS_", "S3_", "CHAIN_"))}
    env.update(DATA_DIR=str(data_dir), PORT=str(port), LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_ready(port: int, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make run exited early:\n{proc.stdout.read()}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/api/system/ready", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"not ready within {START_TIMEOUT_S}s:\n{proc.stdout.read()}")


def stop_platform(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    return output


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def read_services_env(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "services.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_make_run_serves_stops_cleanly_and_keeps_data(tmp_path):
    data_dir, port = tmp_path / "data", free_port()

    proc = start_platform(data_dir, port)
    ready = wait_ready(port, proc)
    assert {name for name, check in ready["checks"].items() if check["status"] == "up"} >= {
        "mongodb",
        "redis",
        "s3",
    }
    urls = read_services_env(data_dir)
    deployed = httpx.get(f"http://127.0.0.1:{port}/api/chain/deployments").json()["deployments"]
    if urls.get("CHAIN_RPC_URL"):  # make run deployed the contracts on its chain
        assert [d["name"] for d in deployed] == ["AssetToken", "Marketplace", "PriceOracle"]

    # the worker started by make run answers a job
    job = httpx.post(f"http://127.0.0.1:{port}/api/system/worker-ping").json()
    deadline = time.monotonic() + 60  # a worker still starting on a loaded 2-core machine took over 20 s
    while (state := httpx.get(f"http://127.0.0.1:{port}{job['statusUrl']}").json())["status"] != "complete":
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["success"] is True

    with MongoClient(urls["MONGODB_URL"]) as mongo:
        mongo.dynamicvault.assets.insert_one({"tokenId": 424242, "name": "kept across restarts"})
    s3 = s3_client(urls["S3_ENDPOINT_URL"])
    s3.put_object(Bucket="dynamicvault-assets", Key="images/originals/424242/primary.jpg", Body=b"jpeg bytes")

    output = stop_platform(proc)
    assert "stopped" in output
    assert processes_mentioning(str(data_dir)) == []  # no orphaned service
    assert processes_mentioning(f"--port {port}") == []  # no orphaned api
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/system/health", timeout=2)

    proc = start_platform(data_dir, port)
    wait_ready(port, proc)
    urls = read_services_env(data_dir)
    try:
        again = httpx.get(f"http://127.0.0.1:{port}/api/chain/deployments").json()["deployments"]
        assert [(d["name"], d["address"]) for d in again] == [(d["name"], d["address"]) for d in deployed]
        with MongoClient(urls["MONGODB_URL"]) as mongo:
            assert mongo.dynamicvault.assets.find_one({"tokenId": 424242})["name"] == "kept across restarts"
        s3 = s3_client(urls["S3_ENDPOINT_URL"])
        body = s3.get_object(Bucket="dynamicvault-assets", Key="images/originals/424242/primary.jpg")[
            "Body"
        ].read()
        assert body == b"jpeg bytes"
    finally:
        stop_platform(proc)
    assert processes_mentioning(str(data_dir)) == []
