"""Secrets kept at rest (a data source's credentials): Fernet, under keys from settings.

Fernet is authenticated encryption (AES-128-CBC with HMAC-SHA256), so a stored value that was changed
or that another key sealed is refused, never decrypted to garbage. `ORACLE_SECRETS_KEY` lists keys,
newest first: the first seals, every one opens, so keys rotate without a flag day.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import Settings
from app.lib.errors import AppError


class SecretUnreadable(AppError):
    """A stored secret that no configured key opens (the key was rotated away, or the value changed)."""

    status_code, code = 503, "secret_unreadable"


class SecretBox:
    """Seals and opens short strings (header values) under the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError) as exc:
            raise SecretUnreadable("a stored secret cannot be decrypted with the configured keys") from exc


@lru_cache(maxsize=8)
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(list(keys))


def secret_box(settings: Settings) -> SecretBox:
    """The box for `ORACLE_SECRETS_KEY` (validated when the settings load), made once per key set."""
    return _box(tuple(settings.oracle.secrets_keys()))
