"""Model versions: their artifacts in S3, loaded once per process and checked against their record.

An artifact is a compressed pickle of the version's per-type models. Unpickling runs code, so an
artifact is only ever loaded after its bytes match the sha256 its `oracleModels` record holds: writing
the bucket alone cannot make a worker run anything.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from app.lib.bucket import oracle_model_key
from app.lib.errors import AppError
from oracle import artifact
from oracle.model import TypeModel

CACHED_VERSIONS = 3
_cache: OrderedDict[str, Bundle] = OrderedDict()
_lock = asyncio.Lock()


class ModelUnavailable(AppError):
    """The version's artifact is missing or does not match its record."""

    status_code, code = 503, "model_unavailable"


@dataclass
class Bundle:
    """A version's models by asset type, and the unit each type prices in."""

    version: str
    models: dict[str, TypeModel] = field(default_factory=dict)
    currencies: dict[str, str] = field(default_factory=dict)


async def save(storage, bundle: Bundle) -> dict[str, Any]:
    """Store the artifact; its record's `artifact` field (key, sha256, size)."""
    data, sha256 = await asyncio.to_thread(
        artifact.dumps, {"version": bundle.version, "models": bundle.models, "currencies": bundle.currencies}
    )
    key = oracle_model_key(bundle.version)
    await storage.put_bytes(key, data, "application/octet-stream", metadata={"sha256": sha256})
    _remember(bundle)
    return {"key": key, "sha256": sha256, "bytes": len(data)}


async def load(storage, record: dict[str, Any]) -> Bundle:
    """The bundle of a ready version (from this process's cache when it was loaded before)."""
    version = record["version"]
    async with _lock:
        if version in _cache:
            _cache.move_to_end(version)
            return _cache[version]
        stored = record.get("artifact") or {}
        try:
            data = await storage.read(stored["key"])
            content = await asyncio.to_thread(artifact.loads, data, stored["sha256"])
        except (KeyError, ClientError, artifact.ArtifactMismatch) as exc:
            raise ModelUnavailable(f"the artifact of model {version} cannot be used") from exc
        bundle = Bundle(version, content["models"], content["currencies"])
        _remember(bundle)
        return bundle


def _remember(bundle: Bundle) -> None:
    _cache[bundle.version] = bundle
    _cache.move_to_end(bundle.version)
    while len(_cache) > CACHED_VERSIONS:
        _cache.popitem(last=False)
