"""Access tokens (JWT, PyJWT) with key rotation; refresh tokens and API keys (opaque, stored hashed).

No framework, database or Redis here. Rules kept (RFC 8725, DESIGN "Guarantees"):
- each key has exactly one algorithm, and `jwt.decode` is given `algorithms=[that one]` — chosen by our
  key ring from the header `kid`, never from the header `alg`;
- access tokens carry `typ="access"`; refresh tokens and API keys are not JWTs at all, so neither can
  be presented as the other;
- `decode_access_token` does not know about revocation: the caller checks `claims.session_id` against
  the session store so that logout stops a session's access tokens at once.

Why not `litestar.security.jwt`: its `Token.decode(secret, algorithm)` takes one secret and one
algorithm — no key ring chosen by `kid` — so the HTTP layer's auth middleware calls
`decode_access_token` instead.

Rotation: add the new key to every replica's ring first (verify-only), then make it the signing key,
and drop the old key once the last token it signed has expired (TTL + leeway later).

Hashing: refresh tokens and API keys hold 256 random bits, so a plain SHA-256 is enough to store them
— there is no dictionary to attack, and salt or a server pepper would add a secret to manage and
rotate for no gain. The hash is deterministic so a token is looked up by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

__all__ = [
    "AccessClaims",
    "JwtKey",
    "KeyRing",
    "TokenRejected",
    "decode_access_token",
    "hash_api_key",
    "hash_token",
    "issue_access_token",
    "new_api_key",
    "new_refresh_token",
    "new_rotation_key",
    "split_api_key",
    "successor_refresh_token",
    "verify_api_key",
]

Algorithm = Literal["HS256", "ES256", "EdDSA"]

ACCESS_TOKEN_TYPE = "access"
MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 §3.2: a key at least as long as the hash output
MAX_TOKEN_CHARS = 8192
DEFAULT_LEEWAY = timedelta(seconds=30)
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_API_KEY_ID_HEX_CHARS = 12
_API_KEY_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32): 256 bits, unpadded base64url


class TokenRejected(Exception):
    """A token or API key refused; `code` says why.

    Codes: invalid_token, token_expired, invalid_audience, invalid_issuer, unknown_key,
    wrong_token_type, invalid_api_key.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True, repr=False)
class JwtKey:
    """One JWT key: its `kid`, its single algorithm, and its key material (signing part optional)."""

    kid: str
    algorithm: Algorithm
    verifying_key: Any  # bytes (HS256) or a cryptography public key
    signing_key: Any | None  # bytes (HS256), a cryptography private key, or None for verify-only

    def __post_init__(self) -> None:
        if not _KID.fullmatch(self.kid):
            raise ValueError("a kid is 1-64 characters of [A-Za-z0-9._-]")

    def __repr__(self) -> str:
        role = "sign+verify" if self.signing_key is not None else "verify"
        return f"JwtKey(kid={self.kid!r}, algorithm={self.algorithm!r}, {role})"

    @classmethod
    def hs256(cls, kid: str, secret: str | bytes) -> JwtKey:
        """An HMAC-SHA256 key from a secret of at least 32 bytes."""
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(f"an HS256 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
        if raw.lstrip().startswith(b"-----BEGIN") or raw.startswith(b"ssh-"):
            raise ValueError("an HS256 secret must not be a PEM or SSH key (algorithm confusion)")
        return cls(kid=kid, algorithm="HS256", verifying_key=raw, signing_key=raw)

    @classmethod
    def from_pem(cls, kid: str, pem: str | bytes, algorithm: Literal["ES256", "EdDSA"]) -> JwtKey:
        """An ES256 (P-256) or EdDSA (Ed25519) key from PEM; a public PEM gives a verify-only key."""
        data = pem.encode() if isinstance(pem, str) else bytes(pem)
        private: Any | None
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public = private.public_key()
        else:
            private, public = None, serialization.load_pem_public_key(data)
        if algorithm == "ES256":
            ok = isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)
        elif algorithm == "EdDSA":
            ok = isinstance(public, ed25519.Ed25519PublicKey)
        else:
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        if not ok:
            raise ValueError(f"the PEM key is not a {algorithm} key")
        return cls(kid=kid, algorithm=algorithm, verifying_key=public, signing_key=private)


class KeyRing:
    """The keys accepted for verification, by `kid`, and the one `kid` that signs new tokens."""

    __slots__ = ("_keys", "_signing_kid")

    def __init__(self, keys: Iterable[JwtKey], *, signing_kid: str) -> None:
        by_kid: dict[str, JwtKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ValueError(f"duplicate kid {key.kid!r}")
            by_kid[key.kid] = key
        signing = by_kid.get(signing_kid)
        if signing is None:
            raise ValueError(f"the signing kid {signing_kid!r} is not in the key ring")
        if signing.signing_key is None:
            raise ValueError(f"the signing kid {signing_kid!r} has no private key")
        self._keys = by_kid
        self._signing_kid = signing_kid

    @classmethod
    def hs256(cls, secrets_by_kid: Mapping[str, str | bytes], *, signing_kid: str) -> KeyRing:
        """A ring of HS256 keys, e.g. straight from settings: {"2025-06": "<secret>", ...}."""
        return cls(
            (JwtKey.hs256(kid, secret) for kid, secret in secrets_by_kid.items()), signing_kid=signing_kid
        )

    @property
    def signing_key(self) -> JwtKey:
        return self._keys[self._signing_kid]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def get(self, kid: str) -> JwtKey | None:
        return self._keys.get(kid)

    def __repr__(self) -> str:
        return f"KeyRing(kids={self.kids!r}, signing_kid={self._signing_kid!r})"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    subject: str  # sub: the user id
    session_id: str  # sid
    roles: tuple[str, ...]
    issuer: str
    audience: str
    issued_at: datetime
    expires_at: datetime
    token_id: str  # jti
    key_id: str  # kid of the header


def issue_access_token(
    keyring: KeyRing,
    *,
    subject: str,
    session_id: str,
    roles: Sequence[str],
    issuer: str,
    audience: str,
    ttl: timedelta = timedelta(minutes=15),
    now: datetime | None = None,
) -> tuple[str, AccessClaims]:
    """Sign a new access token with the ring's signing key; returns the token and its claims."""
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    if isinstance(roles, str) or not all(isinstance(role, str) for role in roles):
        raise ValueError("roles must be a sequence of strings")
    for name, value in (
        ("subject", subject),
        ("session_id", session_id),
        ("issuer", issuer),
        ("audience", audience),
    ):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")

    key = keyring.signing_key
    issued_at = int(now.timestamp())
    expires_at = issued_at + int(ttl.total_seconds())
    claims = AccessClaims(
        subject=subject,
        session_id=session_id,
        roles=tuple(roles),
        issuer=issuer,
        audience=audience,
        issued_at=datetime.fromtimestamp(issued_at, UTC),
        expires_at=datetime.fromtimestamp(expires_at, UTC),
        token_id=secrets.token_urlsafe(16),
        key_id=key.kid,
    )
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        "jti": claims.token_id,
        "sid": session_id,
        "roles": list(claims.roles),
        "typ": ACCESS_TOKEN_TYPE,
    }
    token = jwt.encode(payload, key.signing_key, algorithm=key.algorithm, headers={"kid": key.kid})
    return token, claims


def decode_access_token(
    keyring: KeyRing,
    token: str,
    *,
    issuer: str,
    audience: str,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> AccessClaims:
    """Verify an access token against the key its `kid` names, or raise TokenRejected."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected("invalid_token", "the token is empty or too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenRejected("invalid_token", "the token is not a JWT") from exc
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("invalid_token", "the token has no key id")
    key = keyring.get(kid)
    if key is None:
        raise TokenRejected("unknown_key", "the token's key is not (or no longer) accepted")

    try:
        payload = jwt.decode(
            token,
            key.verifying_key,
            algorithms=[key.algorithm],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": _REQUIRED_CLAIMS, "strict_aud": True},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("token_expired", "the token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenRejected("invalid_audience", "the token is not for this audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenRejected("invalid_issuer", "the token is not from this issuer") from exc
    except jwt.InvalidTokenError as exc:
        # bad signature, an algorithm other than the key's (alg=none, HS/RS confusion), missing or
        # ill-typed claims, iat/nbf in the future
        raise TokenRejected("invalid_token", "the token is not valid") from exc

    if payload.get("typ") != ACCESS_TOKEN_TYPE:
        raise TokenRejected("wrong_token_type", "the token is not an access token")
    session_id, roles = payload.get("sid"), payload.get("roles")
    if not isinstance(session_id, str) or not session_id:
        raise TokenRejected("invalid_token", "the token has no session id")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise TokenRejected("invalid_token", "the token's roles are not a list of strings")
    try:
        issued_at = datetime.fromtimestamp(payload["iat"], UTC)
        expires_at = datetime.fromtimestamp(payload["exp"], UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise TokenRejected("invalid_token", "the token's times are not numbers") from exc
    return AccessClaims(
        subject=payload["sub"],
        session_id=session_id,
        roles=tuple(roles),
        issuer=payload["iss"],
        audience=audience,
        issued_at=issued_at,
        expires_at=expires_at,
        token_id=payload["jti"],
        key_id=kid,
    )


def new_refresh_token() -> str:
    """A new opaque refresh token: 256 random bits, URL-safe (43 characters); store only its hash."""
    return secrets.token_urlsafe(32)


def new_rotation_key() -> str:
    """A session's secret for deriving its refresh tokens (see `successor_refresh_token`)."""
    return secrets.token_hex(32)


# Deterministic, so that two refreshes racing with one token can both get the same successor although
# only hashes are stored; keyed by the session's secret, so holding a token does not give its successor.
def successor_refresh_token(rotation_key: str, token: str) -> str:
    """The refresh token that follows `token` in its session (HMAC-SHA256, 43 URL-safe characters)."""
    digest = hmac.new(bytes.fromhex(rotation_key), token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    """SHA-256 hex of a refresh token: what the session store keeps and looks up."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key(prefix: str = "dv_") -> str:
    """A new API key `<prefix><12 hex public id>_<43-char secret>`; show it once, store its hash and id."""
    if not re.fullmatch(r"[a-z][a-z0-9]*_", prefix):
        raise ValueError("an API key prefix is lowercase letters and digits ending in '_'")
    return f"{prefix}{secrets.token_hex(_API_KEY_ID_HEX_CHARS // 2)}_{secrets.token_urlsafe(32)}"


def split_api_key(key: str, *, prefix: str = "dv_") -> tuple[str, str]:
    """The (public id, secret) of an API key, or TokenRejected("invalid_api_key") if it has not our shape."""
    if not isinstance(key, str) or len(key) > 200 or not key.startswith(prefix):
        raise TokenRejected("invalid_api_key", "not an API key of this service")
    public_id, sep, secret = key[len(prefix) :].partition("_")
    if (
        not sep
        or not re.fullmatch(rf"[0-9a-f]{{{_API_KEY_ID_HEX_CHARS}}}", public_id)
        or not _API_KEY_SECRET.fullmatch(secret)
    ):
        raise TokenRejected("invalid_api_key", "not an API key of this service")
    return public_id, secret


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the whole API key, as stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def verify_api_key(key: str, stored_hash: str) -> bool:
    """Whether `key` is the key whose hash is stored (found by its public id), in constant time."""
    return hmac.compare_digest(hash_api_key(key), stored_hash)


def check_key_settings(secrets_by_kid: Mapping[str, str | bytes], signing_kid: str) -> None:
    """Refuse bad signing keys at start-up, naming the settings, rather than on the first sign-in."""
    try:
        KeyRing.hs256(secrets_by_kid, signing_kid=signing_kid)
    except ValueError as exc:
        raise ValueError(f"AUTH_JWT_SECRET / AUTH_JWT_KID / AUTH_JWT_VERIFY_KEYS: {exc}") from exc
