"""Data and requests for the media tests: photos with GPS EXIF, hostile files, uploads (assets and owners:
tests/factories.py)."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import httpx
from PIL import Image

SECRET_MAKER = b"SecretPhoneMaker"


def photo(size: tuple[int, int] = (1200, 900), *, gps: bool = True) -> bytes:
    """A JPEG photo, carrying camera make and GPS position in its EXIF when `gps`."""
    width, height = size
    image = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
        ],
    )
    exif = Image.Exif()
    if gps:
        exif[0x010F] = SECRET_MAKER.decode()
        exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 12.5), 3: "E", 4: (4.0, 53.0, 30.1)})
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=90)
    assert width and height
    return buffer.getvalue()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid all-black 1-bit PNG: a few KB on disk, width*height bytes once decoded by Pillow."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = [compressor.compress(row * 256) for _ in range(height // 256)]
    idat += [compressor.compress(row * (height % 256)), compressor.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")
    )


PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<<>>\n%%EOF\n"


def has_gps(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        return bool(image.getexif().get_ifd(0x8825)) or SECRET_MAKER in data


def policy(form: dict) -> dict:
    """The decoded policy document of a presigned POST."""
    return json.loads(base64.b64decode(form["fields"]["policy"]))


async def post_form(form: dict, data: bytes, filename: str = "upload.bin") -> httpx.Response:
    """Send a presigned POST form to S3 over real HTTP, as a browser would."""
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(form["url"], data=form["fields"], files={"file": (filename, data)})


# An asset upload's request body, in the API's names: a small JPEG image of asset 7 unless told otherwise.
UPLOAD = {
    "purpose": "image",
    "tokenId": 7,
    "fileName": "x.jpg",
    "contentType": "image/jpeg",
    "contentLength": 10,
}


def upload_body(**fields) -> dict:
    return {**UPLOAD, **fields}


async def presign(client, login, **body) -> dict:
    """A presigned POST form for `body` as given (the API must grant it)."""
    response = await client.post("/api/storage/presigned-url", json=body, headers=login.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def upload(client, login, data: bytes, filename: str = "upload.bin", **fields) -> dict:
    """Presign an asset upload of `data` (`upload_body(**fields)`, declaring the length of `data` unless
    told otherwise) and POST it to S3 as a browser would; S3 must take it. Returns the form."""
    form = await presign(client, login, **upload_body(**{"contentLength": len(data), **fields}))
    uploaded = await post_form(form, data, filename)
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    return form


async def start_multipart(client, login, **fields) -> httpx.Response:
    """Start a multipart upload of `upload_body(**fields)`."""
    return await client.post(
        "/api/storage/multipart-uploads", json=upload_body(**fields), headers=login.headers
    )


async def complete_multipart(
    client, headers: dict, upload: dict, upload_id: str | None = None
) -> httpx.Response:
    """Complete the multipart `upload` (its own uploadId unless another is given)."""
    body = {"key": upload["key"], "uploadId": upload_id or upload["uploadId"]}
    return await client.post("/api/storage/multipart-uploads/complete", json=body, headers=headers)


async def object_keys(clients, prefix: str = "") -> list[str]:
    return sorted([obj.key async for obj in clients.storage.list(prefix)])
