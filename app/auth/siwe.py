"""Sign-In with Ethereum (EIP-4361): strict parsing and every check siwe-py's `verify()` leaves out.

No framework, database or Redis here. The HTTP layer calls, in this order:

1. `parse_message(text)` — size limits, then the `siwe` package's ABNF parser; the text must be the
   canonical serialisation of what it parsed to, so the fields checked are exactly the bytes signed.
2. take the nonce from its store atomically (Redis `GETDEL`), then
   `verify_message_fields(msg, expected_*=..., now=...)` — domain, uri, chain id, address, nonce, times.
3. `await verify_signature(text, signature, msg.address, w3=...)` — EIP-191 for accounts, ERC-1271 for
   contract wallets on the configured chain.

Every refusal is a `SiweRejected` whose `code` says which check failed. `parse_message` is CPU-bound
(a few ms for a usual message, ~0.2 s for one at every size limit): call it behind the rate limit, and
from a worker thread (`anyio.to_thread.run_sync`) if that matters to the event loop.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import abnf
import aiohttp
import eth_keys.exceptions
import eth_utils.exceptions
from eth_account import Account
from eth_account.messages import defunct_hash_message, encode_defunct
from eth_utils import to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import ProviderConnectionError

from app.lib.errors import BadRequest
from app.lib.params import checksum_address

# Loading siwe's grammar with abnf<2.9 warns that it redefines the core rules ALPHA, LF, DIGIT and
# HEXDIG (harmless: same definitions); said once here rather than in every test run's summary.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", abnf.GrammarWarning)
    from siwe import ISO8601Datetime, SiweMessage

__all__ = [
    "ERC1271_MAGIC_VALUE",
    "SiweMessage",
    "SiweRejected",
    "build_message",
    "new_nonce",
    "parse_message",
    "recover_eoa_signer",
    "verify_message_fields",
    "verify_signature",
]

# The `siwe` ABNF parser is super-linear in field length (measured: a 1,000-char statement takes
# ~0.15 s, 4,000 chars ~1.5 s, 20,000 chars ~35 s), so these limits are what bounds its CPU cost:
# a message at every limit parses in ~0.2 s. They are checked on the raw text, before parsing.
MAX_MESSAGE_BYTES = 4096
MAX_LINE_CHARS = 256  # each line: the domain line, statement, URI, request id, every resource
MAX_LINES = 24  # 14 lines with every optional field, + MAX_RESOURCES, with room to spare
MAX_RESOURCES = 8
MAX_NONCE_CHARS = 64
MAX_SIGNATURE_BYTES = 2048  # EOA signatures are 65 bytes; contract wallets (Safe) concatenate several

ERC1271_MAGIC_VALUE = bytes.fromhex("1626ba7e")  # bytes4(keccak256("isValidSignature(bytes32,bytes)"))
_ERC1271_ABI = [
    {
        "type": "function",
        "name": "isValidSignature",
        "stateMutability": "view",
        "inputs": [{"name": "hash", "type": "bytes32"}, {"name": "signature", "type": "bytes"}],
        "outputs": [{"name": "", "type": "bytes4"}],
    }
]

_CONTROL_CHARS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # everything below space except "\n"
# "0x" (no bytes) is allowed: Safe wallets answer for a message hash approved on chain beforehand.
_SIGNATURE_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NONCE_ALPHABET = string.ascii_letters + string.digits
# A chain that cannot be reached says nothing about the signature: reported as "chain_unavailable".
_TRANSPORT_ERRORS = (OSError, aiohttp.ClientError, ProviderConnectionError)


# The check names SiweRejected carries (chain_unavailable is the chain failing to answer, not a verdict).
REJECTION_CODES = (
    "malformed_message",
    "message_too_long",
    "field_too_long",
    "domain_mismatch",
    "uri_mismatch",
    "chain_mismatch",
    "address_mismatch",
    "nonce_mismatch",
    "issued_in_future",
    "expired",
    "not_yet_valid",
    "invalid_signature",
    "chain_unavailable",
)


class SiweRejected(Exception):
    """A sign-in message or signature refused; `code` names the check that failed.

    Codes: malformed_message, message_too_long, field_too_long, domain_mismatch, uri_mismatch,
    chain_mismatch, address_mismatch, nonce_mismatch, issued_in_future, expired, not_yet_valid,
    invalid_signature, chain_unavailable (the chain could not be asked — a 503, not a verdict).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def new_nonce(length: int = 22) -> str:
    """A random alphanumeric nonce (22 characters ≈ 131 bits); EIP-4361 allows only [A-Za-z0-9]."""
    if length < 16:
        raise ValueError("a nonce shorter than 16 characters is too guessable")
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def parse_message(text: str) -> SiweMessage:
    """Parse an EIP-4361 message strictly, or raise SiweRejected."""
    if not isinstance(text, str):
        raise SiweRejected("malformed_message", "the message must be a string")
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_MESSAGE_BYTES:
        raise SiweRejected("message_too_long", f"the message is longer than {MAX_MESSAGE_BYTES} bytes")
    if _CONTROL_CHARS.search(text):
        raise SiweRejected(
            "malformed_message", "the message contains control characters (only LF line breaks)"
        )
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        raise SiweRejected("field_too_long", f"the message has more than {MAX_LINES} lines")
    if any(len(line) > MAX_LINE_CHARS for line in lines):
        raise SiweRejected(
            "field_too_long", f"a line of the message is longer than {MAX_LINE_CHARS} characters"
        )

    try:
        msg = SiweMessage.from_message(message=text, abnf=True)
    except (ValueError, RecursionError) as exc:
        # The ABNF parser's ParseError and pydantic's ValidationError (bad EIP-55 address, impossible
        # dates such as February 31st) both arrive as ValueError.
        raise SiweRejected("malformed_message", "the message is not a valid EIP-4361 message") from exc

    if len(msg.nonce) > MAX_NONCE_CHARS:
        raise SiweRejected("field_too_long", f"the nonce is longer than {MAX_NONCE_CHARS} characters")
    if msg.resources and len(msg.resources) > MAX_RESOURCES:
        raise SiweRejected("field_too_long", f"the message lists more than {MAX_RESOURCES} resources")
    # Re-serialising must give back the very text, so the fields returned are exactly what was signed
    # (this refuses e.g. "Chain ID: 01", which parses to 1).
    if msg.prepare_message() != text:
        raise SiweRejected("malformed_message", "the message is not in canonical EIP-4361 form")
    for value in (msg.issued_at, msg.expiration_time, msg.not_before):
        if value is not None:
            _to_datetime(value)
    return msg


def verify_message_fields(
    msg: SiweMessage,
    *,
    expected_domain: str,
    expected_uri: str,
    expected_chain_id: int,
    expected_address: str,
    expected_nonce: str,
    now: datetime,
    clock_skew: timedelta = timedelta(seconds=60),
) -> None:
    """Check a parsed message against this server's values and the time `now`, or raise SiweRejected.

    - domain: exact string match; an optional scheme before it must be the scheme of `expected_uri`.
    - uri: same origin as `expected_uri` (scheme, host, port — default ports made explicit, case folded);
      the path, query and fragment are not compared, because wallets and frontends sign the page URL
      the user happened to be on. A uri with userinfo (`https://user@host`) is refused.
    - address: `expected_address` (any case, or valid EIP-55) normalised to EIP-55 and compared with the
      message's address, which the parser already required to be EIP-55.
    - nonce: constant-time comparison.
    - times, with `clock_skew` for the client's clock: refused when issuedAt > now + skew
      (issued_in_future), expirationTime <= now - skew (expired), notBefore > now + skew (not_yet_valid).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    expected_origin = _origin(expected_uri)
    if expected_origin is None:
        raise ValueError(f"expected_uri {expected_uri!r} is not an absolute http(s) URI")

    if msg.domain != expected_domain:
        raise SiweRejected("domain_mismatch", f"the message is for {msg.domain!r}, not {expected_domain!r}")
    if msg.scheme is not None and msg.scheme.lower() != expected_origin[0]:
        raise SiweRejected("domain_mismatch", f"the message is for scheme {msg.scheme!r}")
    if _origin(msg.uri) != expected_origin:
        raise SiweRejected("uri_mismatch", f"the message uri {msg.uri!r} is not on {expected_uri!r}")
    if msg.chain_id != expected_chain_id:
        raise SiweRejected(
            "chain_mismatch", f"the message is for chain {msg.chain_id}, not {expected_chain_id}"
        )
    wallet_address = _checksum_address(expected_address)
    if wallet_address is None:
        raise SiweRejected("address_mismatch", "the wallet address is not a valid address")
    if msg.address != wallet_address:
        raise SiweRejected("address_mismatch", "the message address is not the wallet address")
    if not hmac.compare_digest(msg.nonce.encode(), expected_nonce.encode()):
        raise SiweRejected("nonce_mismatch", "the message nonce was not issued for this sign-in")

    if _to_datetime(msg.issued_at) > now + clock_skew:
        raise SiweRejected("issued_in_future", "the message is issued in the future")
    if msg.expiration_time is not None and _to_datetime(msg.expiration_time) <= now - clock_skew:
        raise SiweRejected("expired", "the message has expired")
    if msg.not_before is not None and _to_datetime(msg.not_before) > now + clock_skew:
        raise SiweRejected("not_yet_valid", "the message is not valid yet")


def recover_eoa_signer(message_text: str, signature_hex: str) -> str:
    """The EIP-55 address whose key made this EIP-191 (personal_sign) signature of `message_text`."""
    signature = _signature_bytes(signature_hex)
    if len(signature) != 65:
        raise SiweRejected("invalid_signature", "an account signature is 65 bytes")
    # Strict where eth-account is lenient: v must be 27/28 (or 0/1, as some hardware wallets send),
    # not an EIP-155 transaction v; and s must be in the lower half of the curve order (EIP-2), so
    # each signature has one form — as OpenZeppelin's ECDSA and our ERC1271Wallet require.
    if signature[64] not in (0, 1, 27, 28):
        raise SiweRejected("invalid_signature", "the signature's recovery byte is not 0, 1, 27 or 28")
    if int.from_bytes(signature[32:64], "big") > _SECP256K1_HALF_N:
        raise SiweRejected("invalid_signature", "the signature is not in canonical (low-s) form")
    try:
        return Account.recover_message(encode_defunct(text=message_text), signature=signature)
    except (
        ValueError,
        eth_keys.exceptions.BadSignature,
        eth_keys.exceptions.ValidationError,
        eth_utils.exceptions.ValidationError,
    ) as exc:
        raise SiweRejected("invalid_signature", "the signature cannot be recovered") from exc


async def verify_signature(
    message_text: str, signature_hex: str, address: str, *, w3: AsyncWeb3 | None
) -> None:
    """Accept an EIP-191 signature by `address`, or an ERC-1271 one when `address` is a contract on `w3`."""
    signature = _signature_bytes(signature_hex)
    expected = _checksum_address(address)
    if expected is None:
        raise ValueError(f"{address!r} is not an address")
    if len(signature) == 65:
        try:
            if recover_eoa_signer(message_text, signature_hex) == expected:
                return
        except SiweRejected:
            pass  # not an account signature; a contract wallet may still accept it
    if w3 is None:
        raise SiweRejected("invalid_signature", "the signature is not by the message address")

    try:
        code = await w3.eth.get_code(expected)
    except _TRANSPORT_ERRORS as exc:
        raise SiweRejected("chain_unavailable", "the chain could not be reached") from exc
    if not code:
        raise SiweRejected("invalid_signature", "the signature is not by the message address")

    wallet = w3.eth.contract(address=expected, abi=_ERC1271_ABI)
    try:
        result = await wallet.functions.isValidSignature(
            defunct_hash_message(text=message_text), signature
        ).call()
    except _TRANSPORT_ERRORS as exc:
        raise SiweRejected("chain_unavailable", "the chain could not be reached") from exc
    except Exception as exc:
        # A revert, an empty or undecodable answer, an RPC error: each provider raises its own type
        # (web3's ContractLogicError/BadFunctionCallOutput, eth-tester's TransactionFailed, ...), and
        # none of them is a proof of a valid signature.
        raise SiweRejected("invalid_signature", "the contract wallet did not accept the signature") from exc
    if result != ERC1271_MAGIC_VALUE:
        raise SiweRejected("invalid_signature", "the contract wallet did not accept the signature")


def build_message(
    *,
    domain: str,
    address: str,
    uri: str,
    chain_id: int,
    nonce: str,
    issued_at: datetime,
    statement: str | None = None,
    expiration_time: datetime | None = None,
    not_before: datetime | None = None,
    request_id: str | None = None,
    resources: Sequence[str] = (),
    scheme: str | None = None,
) -> str:
    """The canonical EIP-4361 text for these fields (for clients and tests); raises ValueError if invalid."""
    if chain_id < 1:
        raise ValueError("chain_id must be positive")  # siwe would silently write "Chain ID: 1" for 0
    msg = SiweMessage(
        scheme=scheme,
        domain=domain,
        address=to_checksum_address(address),
        statement=statement,
        uri=uri,
        version="1",
        chain_id=chain_id,
        nonce=nonce,
        issued_at=_iso(issued_at),
        expiration_time=_iso(expiration_time) if expiration_time is not None else None,
        not_before=_iso(not_before) if not_before is not None else None,
        request_id=request_id,
        resources=list(resources) or None,
    )
    text = msg.prepare_message()
    try:
        parse_message(text)
    except SiweRejected as exc:
        raise ValueError(f"these fields do not make a valid message: {exc}") from exc
    return text


def _iso(value: datetime) -> ISO8601Datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return ISO8601Datetime.from_datetime(value)


def _to_datetime(value: str) -> datetime:
    # The grammar already requires an RFC 3339 date-time with an offset; Python 3.11 reads "Z" itself.
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SiweRejected("malformed_message", f"{value!r} is not an RFC 3339 date-time") from exc
    if parsed.tzinfo is None:
        raise SiweRejected("malformed_message", f"{value!r} has no UTC offset")
    return parsed


def _origin(uri: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _checksum_address(value: object) -> str | None:
    # Mixed case must be valid EIP-55 (a wrong case is a typo the checksum exists to catch); all-lower or
    # all-upper is fine: app.lib.params.checksum_address's rule, with None where it answers 400.
    try:
        return checksum_address(value)
    except BadRequest:
        return None


def _signature_bytes(signature_hex: str) -> bytes:
    if not isinstance(signature_hex, str) or not _SIGNATURE_HEX.fullmatch(signature_hex):
        raise SiweRejected("invalid_signature", "the signature is not 0x-prefixed hex of whole bytes")
    signature = bytes.fromhex(signature_hex[2:])
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise SiweRejected("invalid_signature", f"the signature is longer than {MAX_SIGNATURE_BYTES} bytes")
    return signature
