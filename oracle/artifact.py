"""Serialized models: compressed pickles whose digest is checked before anything is unpickled."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import zlib
from typing import Any


class ArtifactMismatch(ValueError):
    """The bytes are not the ones whose digest was recorded: corrupted or tampered, never unpickled."""


def dumps(obj: Any) -> tuple[bytes, str]:
    """Compressed pickle bytes and their sha256 hex digest, to be stored together."""
    data = zlib.compress(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), level=6)
    return data, hashlib.sha256(data).hexdigest()


def loads(data: bytes, sha256: str) -> Any:
    """The object back, only if `data` hashes to `sha256`: unpickling untrusted bytes runs arbitrary code."""
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual.encode(), sha256.strip().lower().encode()):
        raise ArtifactMismatch(f"artifact digest {actual} does not match the recorded {sha256}")
    return pickle.loads(zlib.decompress(data))  # noqa: S301 - the digest above vouches for the bytes
