"""Real worker processes (`python -m workers ...`) on the session's services, and images to feed them."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

from app.config import Settings
from app.lib.embedded import ROOT
from scripts.benchkit import process_env
from tests.media import support as media


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process that uses this session's services, database and bucket."""
    return process_env(settings, **extra)


def start_worker(settings: Settings, *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workers", *args], cwd=ROOT, env=worker_env(settings, **extra_env)
    )


def peak_rss_mb(pid: int) -> float:
    """The most resident memory the process has had (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmHWM for process {pid}")


def rgba_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGBA PNG of one translucent colour: a few hundred KB, width*height*4 bytes decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes((200, 30, 30, 128)) * width
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def queue_avatar(client, login, data: bytes) -> str:
    """Stage a PNG avatar as a browser would and ask for its promotion; the job id."""
    form = await media.presign(
        client, login, purpose="avatar", fileName="me.png", contentType="image/png", contentLength=len(data)
    )
    uploaded = await media.post_form(form, data, "me.png")
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    queued = await client.post("/api/users/me/avatar", json={"key": form["key"]}, headers=login.headers)
    assert queued.status_code == 202, queued.text
    return queued.json()["jobId"]
