"""Secrets kept at rest (a data source's credentials): Fernet, under keys from settings.

Fernet is authenticated encryption (AES-128-CBC with HMAC-SHA256), so a stored value that was changed
or that another key sealed is refused, never decrypted to garbage. `ORACLE_SECRETS_KEY` lists keys,
newest first: the first seals, every one opens, so keys rotate without a flag day.

A credential is sealed together with the origin it was given for (`seal_for`), and opens only for that
origin (`open_for`): whoever may change where a source points cannot make the platform carry an
admin's credential to a host of their choosing, whatever path the change took.
"""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import Settings
from app.lib.errors import AppError


class SecretUnreadable(AppError):
    """A stored secret that no configured key opens (the key was rotated away, or the value changed)."""

    status_code, code = 503, "secret_unreadable"


class SecretMisbound(AppError):
    """A stored credential sealed for another origin than the one it is about to be sent to."""

    status_code, code = 422, "credentials_origin_mismatch"


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

    def seal_for(self, plain: str, origin: str) -> str:
        """`plain` sealed with the origin (`scheme://host:port`) it may be sent to."""
        return self.seal(json.dumps({"origin": origin, "value": plain}, separators=(",", ":")))

    def open_for(self, sealed: str, origin: str) -> str:
        """The value sealed for `origin`; SecretMisbound when it was sealed for another (or for none)."""
        try:
            bound = json.loads(self.open(sealed))
        except ValueError:
            bound = None
        if (
            not isinstance(bound, dict)
            or bound.get("origin") != origin
            or not isinstance(bound.get("value"), str)
        ):
            raise SecretMisbound(
                "the source's credentials were given for another origin; set them again for this URL"
            )
        return bound["value"]


@lru_cache(maxsize=8)
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(list(keys))


def secret_box(settings: Settings) -> SecretBox:
    """The box for `ORACLE_SECRETS_KEY` (validated when the settings load), made once per key set."""
    return _box(tuple(settings.oracle.secrets_keys()))
