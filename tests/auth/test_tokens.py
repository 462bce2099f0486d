"""Access tokens: the JWT attacks of RFC 8725, key rotation; refresh tokens and API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from app.auth.tokens import (
    MAX_TOKEN_CHARS,
    JwtKey,
    KeyRing,
    TokenRejected,
    decode_access_token,
    hash_api_key,
    hash_token,
    issue_access_token,
    new_api_key,
    new_refresh_token,
    split_api_key,
    verify_api_key,
)

ISSUER = "https://api.dynamicvault.test"
AUDIENCE = "dynamicvault-api"
SECRET_A = "a" * 16 + "-secret-for-tests-only-0001"
SECRET_B = "b" * 16 + "-secret-for-tests-only-0002"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def hs256(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """An HS256 token signed by hand (PyJWT refuses to use a PEM key as an HMAC secret)."""
    unsigned = forge(header, payload).rsplit(".", 1)[0]
    return f"{unsigned}.{b64(hmac.new(secret, unsigned.encode(), hashlib.sha256).digest())}"


def payload_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def pem_private(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def issue(ring: KeyRing, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "subject": "user-1",
        "session_id": "session-1",
        "roles": ["user"],
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
    fields.update(overrides)
    return issue_access_token(ring, **fields)[0]


def decode(ring: KeyRing, token: str, **overrides: Any) -> Any:
    expected: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
    expected.update(overrides)
    return decode_access_token(ring, token, **expected)


def rejected(code: str) -> Any:
    return pytest.raises(TokenRejected, match=rf"^{code}:")


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.hs256({"k1": SECRET_A}, signing_kid="k1")


@pytest.fixture
def es_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- issuing and verifying -----------------------------------------------------------------------------


def test_issued_token_verifies_with_its_claims(ring: KeyRing) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token, issued = issue_access_token(
        ring,
        subject="user-1",
        session_id="session-1",
        roles=["user", "oracle"],
        issuer=ISSUER,
        audience=AUDIENCE,
        now=now,
    )
    claims = decode(ring, token)
    assert claims == issued
    assert claims.subject == "user-1" and claims.session_id == "session-1"
    assert claims.roles == ("user", "oracle") and claims.key_id == "k1"
    assert claims.issued_at == now and claims.expires_at == now + timedelta(minutes=15)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    payload = payload_of(token)
    assert set(payload) == {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "roles", "typ"}
    assert payload["typ"] == "access" and payload["exp"] - payload["iat"] == 15 * 60


def test_each_token_has_its_own_jti(ring: KeyRing) -> None:
    assert len({payload_of(issue(ring))["jti"] for _ in range(20)}) == 20


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_asymmetric_keys_sign_and_a_public_key_verifies(algorithm: str) -> None:
    private = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ES256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    signer = KeyRing([JwtKey.from_pem("k1", pem_private(private), algorithm)], signing_kid="k1")  # type: ignore[arg-type]
    token = issue(signer)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    assert decode(signer, token).subject == "user-1"

    public_only = JwtKey.from_pem("k1", pem_public(private), algorithm)  # type: ignore[arg-type]
    other_signer = KeyRing.hs256({"other": SECRET_B}, signing_kid="other")
    verifier = KeyRing([public_only, *(other_signer.get(k) for k in other_signer.kids)], signing_kid="other")
    assert decode(verifier, token).subject == "user-1"
    with pytest.raises(ValueError, match="no private key"):
        KeyRing([public_only], signing_kid="k1")


def test_hand_signed_token_is_accepted_when_honest(ring: KeyRing) -> None:
    # the control for the forgeries below: the hand-made HS256 signer itself is correct
    payload = payload_of(issue(ring))
    assert decode(
        ring, hs256(SECRET_A.encode(), {"alg": "HS256", "kid": "k1", "typ": "JWT"}, payload)
    ).subject


# --- attacks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(ring: KeyRing, alg: str) -> None:
    payload = payload_of(issue(ring))
    with rejected("invalid_token"):
        decode(ring, forge({"alg": alg, "kid": "k1", "typ": "JWT"}, payload))
    with rejected("invalid_token"):  # a "none" token keeping the original signature
        decode(ring, forge({"alg": alg, "kid": "k1"}, payload) + "x" * 10)


def test_hmac_token_signed_with_a_public_key_is_refused(es_key: ec.EllipticCurvePrivateKey) -> None:
    # The classic HS/RS confusion: the attacker knows the public key and uses its PEM as an HMAC secret.
    ring = KeyRing([JwtKey.from_pem("es", pem_private(es_key), "ES256")], signing_kid="es")
    payload = payload_of(issue(ring)) | {"roles": ["admin"]}
    public_pem = pem_public(es_key)
    for secret in (public_pem, public_pem.strip()):
        with rejected("invalid_token"):
            decode(ring, hs256(secret, {"alg": "HS256", "kid": "es", "typ": "JWT"}, payload))


def test_asymmetric_token_for_an_hmac_key_is_refused(ring: KeyRing) -> None:
    # The other direction: an RS256/ES256 token, signed by the attacker's own key, naming our HS256 kid.
    payload = payload_of(issue(ring)) | {"roles": ["admin"]}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for key, alg in ((rsa_key, "RS256"), (ec.generate_private_key(ec.SECP256R1()), "ES256")):
        token = jwt.encode(payload, key, algorithm=alg, headers={"kid": "k1"})
        with rejected("invalid_token"):
            decode(ring, token)


def test_tampered_payload_is_refused(ring: KeyRing) -> None:
    header, _payload, signature = issue(ring).split(".")
    payload = payload_of(issue(ring)) | {"roles": ["admin"]}
    with rejected("invalid_token"):
        decode(ring, f"{header}.{b64(json.dumps(payload).encode())}.{signature}")


def test_token_signed_by_another_secret_is_refused(ring: KeyRing) -> None:
    impostor = KeyRing.hs256({"k1": SECRET_B}, signing_kid="k1")
    with rejected("invalid_token"):
        decode(ring, issue(impostor))


def test_tampered_kid_is_refused() -> None:
    ring = KeyRing.hs256({"k1": SECRET_A, "k2": SECRET_B}, signing_kid="k1")
    token = issue(ring)
    header = jwt.get_unverified_header(token) | {"kid": "k2"}
    _header, payload, signature = token.split(".")
    with rejected("invalid_token"):
        decode(ring, f"{b64(json.dumps(header).encode())}.{payload}.{signature}")


def test_expired_token_is_refused(ring: KeyRing) -> None:
    token = issue(ring, now=datetime.now(UTC) - timedelta(hours=1))
    with rejected("token_expired"):
        decode(ring, token)


def test_expiry_within_leeway_is_accepted(ring: KeyRing) -> None:
    token = issue(ring, now=datetime.now(UTC) - timedelta(minutes=1), ttl=timedelta(seconds=50))
    assert decode(ring, token, leeway=timedelta(seconds=30)).subject == "user-1"
    with rejected("token_expired"):
        decode(ring, token, leeway=timedelta(0))


def test_token_issued_in_the_future_is_refused(ring: KeyRing) -> None:
    token = issue(ring, now=datetime.now(UTC) + timedelta(minutes=5))
    with rejected("invalid_token"):
        decode(ring, token)


def test_wrong_audience_is_refused(ring: KeyRing) -> None:
    with rejected("invalid_audience"):
        decode(ring, issue(ring, audience="another-api"))
    with rejected("invalid_audience"):
        decode(ring, issue(ring), audience="another-api")


def test_audience_list_is_refused(ring: KeyRing) -> None:
    # strict audience: a token for several audiences is not a token for us
    payload = payload_of(issue(ring)) | {"aud": [AUDIENCE, "another-api"]}
    with rejected("invalid_audience"):
        decode(ring, jwt.encode(payload, SECRET_A.encode(), algorithm="HS256", headers={"kid": "k1"}))


def test_wrong_issuer_is_refused(ring: KeyRing) -> None:
    with rejected("invalid_issuer"):
        decode(ring, issue(ring, issuer="https://evil.test"))


def test_missing_kid_is_refused(ring: KeyRing) -> None:
    payload = payload_of(issue(ring))
    with rejected("invalid_token"):
        decode(ring, jwt.encode(payload, SECRET_A.encode(), algorithm="HS256"))
    with rejected("invalid_token"):
        decode(ring, hs256(SECRET_A.encode(), {"alg": "HS256", "kid": 1}, payload))  # PyJWT won't encode it


def test_unknown_kid_is_refused(ring: KeyRing) -> None:
    payload = payload_of(issue(ring))
    with rejected("unknown_key"):
        decode(ring, jwt.encode(payload, SECRET_A.encode(), algorithm="HS256", headers={"kid": "k9"}))


@pytest.mark.parametrize("typ", ["refresh", None, "Access", ""])
def test_token_of_another_type_is_refused(ring: KeyRing, typ: str | None) -> None:
    payload = payload_of(issue(ring)) | {"typ": typ}
    if typ is None:
        del payload["typ"]
    token = jwt.encode(payload, SECRET_A.encode(), algorithm="HS256", headers={"kid": "k1"})
    with rejected("wrong_token_type"):
        decode(ring, token)


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub", "jti", "sid", "roles"])
def test_token_missing_a_claim_is_refused(ring: KeyRing, claim: str) -> None:
    payload = payload_of(issue(ring))
    del payload[claim]
    token = jwt.encode(payload, SECRET_A.encode(), algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(TokenRejected) as exc_info:
        decode(ring, token)
    assert exc_info.value.code in {"invalid_token", "invalid_audience", "invalid_issuer"}


@pytest.mark.parametrize(
    "changes", [{"roles": "admin"}, {"roles": [1]}, {"sid": 7}, {"sub": 7}, {"jti": 7}, {"sid": ""}]
)
def test_token_with_ill_typed_claims_is_refused(ring: KeyRing, changes: dict[str, Any]) -> None:
    payload = payload_of(issue(ring)) | changes
    token = jwt.encode(payload, SECRET_A.encode(), algorithm="HS256", headers={"kid": "k1"})
    with rejected("invalid_token"):
        decode(ring, token)


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b.c", "x" * (MAX_TOKEN_CHARS + 1), new_refresh_token(), new_api_key()],
    ids=["empty", "garbage", "three-parts", "oversize", "refresh-token", "api-key"],
)
def test_garbage_is_refused(ring: KeyRing, token: str) -> None:
    with rejected("invalid_token"):
        decode(ring, token)


# --- rotation --------------------------------------------------------------------------------------------


def test_rotation() -> None:
    old = JwtKey.hs256("2025-05", SECRET_A)
    new = JwtKey.hs256("2025-06", SECRET_B)
    before = KeyRing([old], signing_kid="2025-05")
    old_token = issue(before)

    during = KeyRing([new, old], signing_kid="2025-06")
    assert decode(during, old_token).key_id == "2025-05"
    new_token = issue(during)
    assert jwt.get_unverified_header(new_token)["kid"] == "2025-06"
    assert decode(during, new_token).key_id == "2025-06"

    after = KeyRing([new], signing_kid="2025-06")
    with rejected("unknown_key"):
        decode(after, old_token)
    assert decode(after, new_token).key_id == "2025-06"


# --- key configuration -----------------------------------------------------------------------------------


def test_short_hmac_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtKey.hs256("k1", "x" * 31)
    JwtKey.hs256("k1", b"\x00" * 32)


def test_pem_as_hmac_secret_is_refused(es_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="algorithm confusion"):
        JwtKey.hs256("k1", pem_public(es_key))


def test_pem_of_the_wrong_kind_is_refused(es_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError):
        JwtKey.from_pem("k1", pem_private(es_key), "EdDSA")
    with pytest.raises(ValueError):
        JwtKey.from_pem("k1", pem_private(ed25519.Ed25519PrivateKey.generate()), "ES256")
    with pytest.raises(ValueError):
        JwtKey.from_pem("k1", pem_private(ec.generate_private_key(ec.SECP384R1())), "ES256")
    with pytest.raises(ValueError):
        JwtKey.from_pem("k1", pem_private(es_key), "RS256")  # type: ignore[arg-type]


def test_key_ring_configuration_errors() -> None:
    with pytest.raises(ValueError, match="duplicate kid"):
        KeyRing([JwtKey.hs256("k1", SECRET_A), JwtKey.hs256("k1", SECRET_B)], signing_kid="k1")
    with pytest.raises(ValueError, match="not in the key ring"):
        KeyRing.hs256({"k1": SECRET_A}, signing_kid="k2")
    with pytest.raises(ValueError, match="kid"):
        JwtKey.hs256("bad kid!", SECRET_A)


def test_secrets_stay_out_of_reprs(ring: KeyRing) -> None:
    assert SECRET_A not in repr(ring) and SECRET_A not in repr(ring.signing_key)
    assert "k1" in repr(ring)


def test_issue_refuses_bad_arguments(ring: KeyRing) -> None:
    with pytest.raises(ValueError):
        issue(ring, ttl=timedelta(0))
    with pytest.raises(ValueError):
        issue(ring, roles="admin")
    with pytest.raises(ValueError):
        issue(ring, subject="")
    with pytest.raises(ValueError):
        issue(ring, now=datetime(2025, 1, 1))


# --- refresh tokens and API keys --------------------------------------------------------------------------


def test_refresh_tokens_are_long_random_and_opaque() -> None:
    tokens = {new_refresh_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token)  # >= 256 bits, URL-safe, no dots: not a JWT
        assert len(base64.urlsafe_b64decode(token + "=")) >= 32


def test_token_hash_is_sha256_hex() -> None:
    token = new_refresh_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) == hash_token(token)
    assert hash_token(token) != hash_token(new_refresh_token())


def test_api_key_splits_into_public_id_and_secret() -> None:
    key = new_api_key()
    assert key.startswith("dv_")
    public_id, secret = split_api_key(key)
    assert key == f"dv_{public_id}_{secret}"
    assert re.fullmatch(r"[0-9a-f]{12}", public_id)
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert len({split_api_key(new_api_key())[0] for _ in range(50)}) == 50


def test_api_key_verifies_against_its_hash_only() -> None:
    key = new_api_key()
    stored = hash_api_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert verify_api_key(key, stored)
    public_id, secret = split_api_key(key)
    tampered = f"dv_{public_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert not verify_api_key(tampered, stored)
    assert not verify_api_key(new_api_key(), stored)


def test_api_key_with_a_custom_prefix() -> None:
    key = new_api_key(prefix="dvoracle_")
    assert split_api_key(key, prefix="dvoracle_")[0]
    with rejected("invalid_api_key"):
        split_api_key(key)
    with pytest.raises(ValueError):
        new_api_key(prefix="DV-")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "dv_",
        "dv_abc",
        "xx_0123456789ab_" + "A" * 43,
        "dv_0123456789ab" + "A" * 44,
        "dv_0123456789AB_" + "A" * 43,
        "dv_0123456789ab_" + "A" * 42,
        "dv_0123456789ab_" + "A" * 42 + "=",
        "dv_0123456789ab_" + "A" * 300,
    ],
)
def test_malformed_api_key_is_refused(key: str) -> None:
    with rejected("invalid_api_key"):
        split_api_key(key)
