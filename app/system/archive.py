"""The backup format, on disk and in S3: one gzip'd BSON archive per collection, and a manifest.

An archive is the collection's documents as concatenated BSON (what `mongodump` writes, and what
`bson.decode_file_iter` reads back), gzip'd. The manifest, written last, names each archive with its
document count, size and sha256, and the collection's options and index specifications (as
`listIndexes` gives them), in MongoDB's relaxed Extended JSON, so Decimal128, dates and the like in a
partial filter survive. Pure: files and bytes only, no database, no S3.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from bson import json_util
from bson.raw_bson import RawBSONDocument

FORMAT = "dynamicvault-backup/1"
MANIFEST_FILE = "manifest.json"
ARCHIVE_CONTENT_TYPE = "application/gzip"
MANIFEST_CONTENT_TYPE = "application/json"
COMPRESS_LEVEL = 3  # measured on 100k documents: most of level 6's ratio at about half its time
READ_CHUNK_BYTES = 1024 * 1024
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 + 16 * 1024  # MongoDB's limit, and the headroom it allows itself
_LENGTH = struct.Struct("<i")


class ArchiveError(ValueError):
    """An archive or a manifest that cannot be read as the format says."""


@dataclass(frozen=True)
class CollectionArchive:
    name: str
    file: str
    count: int
    bytes: int
    sha256: str
    options: dict[str, Any] = field(default_factory=dict)  # as listCollections gives them
    indexes: list[dict[str, Any]] = field(default_factory=list)  # listIndexes specs, but `_id_`


@dataclass(frozen=True)
class Manifest:
    name: str
    database: str
    started_at: str
    finished_at: str
    collections: list[CollectionArchive]
    format: str = FORMAT

    @property
    def documents(self) -> int:
        return sum(collection.count for collection in self.collections)

    @property
    def bytes(self) -> int:
        return sum(collection.bytes for collection in self.collections)


def archive_file(collection: str) -> str:
    """The archive's file name: the collection's name, percent-encoded so any name is one safe key part."""
    return f"{quote(collection, safe='')}.bson.gz"


def encode_manifest(manifest: Manifest) -> bytes:
    body = asdict(manifest)
    body["documents"], body["bytes"] = manifest.documents, manifest.bytes  # for the reader's eye only
    return json_util.dumps(body, json_options=json_util.RELAXED_JSON_OPTIONS, indent=2).encode()


# What a restore applies from a manifest, and nothing else: the index options this platform creates, no
# collection options (a forged manifest must not make a collection capped, or a TTL delete everything).
INDEX_FIELDS = frozenset(
    {"v", "key", "name", "unique", "sparse", "partialFilterExpression", "expireAfterSeconds", "background"}
)
COLLECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,119}")


def _checked(entry: CollectionArchive) -> CollectionArchive:
    if not COLLECTION_NAME.fullmatch(entry.name):
        raise ArchiveError(f"the manifest names a collection restore does not write: {entry.name[:60]!r}")
    if entry.options:
        raise ArchiveError(
            f"collection {entry.name} has options restore does not apply: {sorted(entry.options)}"
        )
    for spec in entry.indexes:
        unknown = set(spec) - INDEX_FIELDS
        if unknown:
            raise ArchiveError(
                f"an index of {entry.name} has options restore does not apply: {sorted(unknown)}"
            )
        ttl = spec.get("expireAfterSeconds")
        if ttl is not None and (not isinstance(ttl, int) or ttl < 3600):
            raise ArchiveError(f"an index of {entry.name} expires documents after {ttl!r} s (under an hour)")
    return entry


def decode_manifest(data: bytes) -> Manifest:
    """The manifest in `data`; ArchiveError when it is not one of this format, or asks for more than a
    restore of this platform's collections applies (`_checked`)."""
    try:
        body = json_util.loads(data)
        if body.get("format") != FORMAT:
            raise ArchiveError(f"not a {FORMAT} manifest (format {body.get('format')!r})")
        collections = [_checked(CollectionArchive(**entry)) for entry in body["collections"]]
        return Manifest(
            name=body["name"],
            database=body["database"],
            started_at=body["started_at"],
            finished_at=body["finished_at"],
            collections=collections,
        )
    except ArchiveError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArchiveError(f"unreadable manifest: {type(exc).__name__}: {exc}") from exc


class _Digesting(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it to the file below."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)


class ArchiveWriter:
    """Writes one collection's archive to `path`; its sha256 is that of the file's bytes, taken as they
    are written. Blocking (compression): callers in an event loop run `write` in a thread."""

    def __init__(self, path: Path, *, level: int = COMPRESS_LEVEL) -> None:
        self.path = path
        self.count = 0
        self._file = path.open("wb")
        self._digesting = _Digesting(self._file)
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._digesting, compresslevel=level, mtime=0
        )

    def write(self, documents: list[bytes]) -> None:
        """Append documents, each the BSON bytes of one."""
        self._gzip.write(b"".join(documents))
        self.count += len(documents)

    def close(self) -> tuple[int, str]:
        """Finish the file; returns its size and sha256."""
        self._gzip.close()
        self._file.close()
        return self._digesting.size, self._digesting.digest.hexdigest()

    def abandon(self) -> None:
        """Close without finishing (the file is left to be deleted), whatever state a failure left."""
        with contextlib.suppress(Exception):
            self._gzip.close()
        self._file.close()


class ArchiveReader:
    """Reads an archive back in batches of raw documents (RawBSONDocument: inserted as the bytes they
    are, never decoded). Blocking (decompression): callers in an event loop run `read_batch` in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._gzip = gzip.open(path, "rb")  # noqa: SIM115 - closed by close(), across many read_batch calls
        self._buffer = bytearray()
        self._eof = False

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size and not self._eof:
            try:
                chunk = self._gzip.read(READ_CHUNK_BYTES)
            except (OSError, EOFError) as exc:  # a damaged gzip stream
                raise ArchiveError(f"{self.path.name}: {exc}") from exc
            self._eof = not chunk
            self._buffer += chunk
        return len(self._buffer) >= size

    def read_batch(self, max_documents: int, max_bytes: int) -> list[RawBSONDocument]:
        """The next documents, at most `max_documents` and about `max_bytes`; [] at the end."""
        batch: list[RawBSONDocument] = []
        taken = offset = 0
        while len(batch) < max_documents and taken < max_bytes:
            if not self._fill(offset + 4):
                if len(self._buffer) > offset:
                    raise ArchiveError(f"{self.path.name}: truncated after {self.count} documents")
                break
            (length,) = _LENGTH.unpack_from(self._buffer, offset)
            if not 5 <= length <= MAX_DOCUMENT_BYTES:
                raise ArchiveError(f"{self.path.name}: bad document length {length} at #{self.count + 1}")
            if not self._fill(offset + length):
                raise ArchiveError(f"{self.path.name}: truncated in document #{self.count + 1}")
            batch.append(RawBSONDocument(bytes(self._buffer[offset : offset + length])))
            offset += length
            taken += length
            self.count += 1
        del self._buffer[:offset]
        return batch

    def close(self) -> None:
        self._gzip.close()
