"""Stored models come back only when their bytes are the recorded ones."""

import hashlib
import pickle
import zlib

import numpy as np
import pytest

from oracle.artifact import ArtifactMismatch, dumps, loads
from oracle.features import Example
from oracle.model import TypeModel

TRIGGERED: list[str] = []


def _spring(tag: str) -> None:
    TRIGGERED.append(tag)


class _Trap:
    """Unpickling it calls `_spring`: proof of whether the bytes were ever unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _spring, ("unpickled",)


def test_round_trip_of_a_fitted_model(model: TypeModel, sales: tuple[list[Example], np.ndarray]) -> None:
    data, digest = dumps(model)
    assert digest == hashlib.sha256(data).hexdigest()
    restored = loads(data, digest)
    later = sales[0][-20:]
    np.testing.assert_array_equal(restored.predict(later).price, model.predict(later).price)


def test_tampered_bytes_are_refused() -> None:
    data, digest = dumps({"weights": [1, 2, 3]})
    with pytest.raises(ArtifactMismatch):
        loads(data[:-1] + bytes([data[-1] ^ 1]), digest)
    with pytest.raises(ArtifactMismatch):
        loads(data, "0" * 64)


def test_digest_is_checked_before_unpickling() -> None:
    payload = zlib.compress(pickle.dumps(_Trap()))
    with pytest.raises(ArtifactMismatch):
        loads(payload, hashlib.sha256(b"something else").hexdigest())
    assert TRIGGERED == []
    loads(payload, hashlib.sha256(payload).hexdigest())
    assert TRIGGERED == ["unpickled"]
