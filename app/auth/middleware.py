"""Authentication and rate limiting for every request: sets `request.user` to a Principal (or None).

- `Authorization: Bearer <jwt>`: the access token is verified (no I/O; once per process and token,
  see VerifiedTokens), then one Redis round trip
  (a pipeline) both counts the request against its rate limits and reads the session's cached state
  and the user's current roles; a revoked session is refused from the next request on.
- `X-API-Key: <key>`: one Redis round trip (a pipeline) counts the request against the IP's limit,
  reads the key's cached principal together with the key's generation, and charges the key's own
  limit only if that cache entry exists (it is named by the hash of the whole key, so only the right
  secret finds it): naming a public key id with a wrong secret spends nobody's quota. The entry counts
  only if its generation is the current one (a revocation, a role change or a suspension bumps it),
  and an expired key is refused even when cached. On a miss the key is looked up by its hash in
  MongoDB, cached for a minute and only then charged — `Principal(kind="api_key")`. `lastUsed` is
  written at most once a minute per key, by a background task off the request's path.
- Both headers: 400 `ambiguous_credentials`, before either is read (which one should act is a guess).
- No credentials: None, which only routes with `opt={"anonymous": True}` accept. On those routes
  credentials are still read when sent, and bad, expired or revoked ones are a 401 all the same.

Refused credentials count per IP on their own limit (AUTH_RATE_LIMITS "failed_credentials"; 429 past
it, and no more API-key lookups for that IP in the window). They are written to the audit trail
("auth.credentials_rejected", with the reason) once per (ip, reason) and window, and so is the first
request a rate limit refuses in each window ("auth.rate_limited").

Rate-limit groups: a handler (or its controller) picks one with `opt={"rate_limit": "auth"}`; the
rest count under "default"; `opt={"rate_limit": None}` exempts a route. /schema, /metrics and
/api/system/* (probes and scrapers) are open: no user credentials are read there (operators send the
METRICS_TOKEN, see app/lib/observability.py), and they are counted per IP only under a group their
route names ("system"), letting the request through when Redis cannot count it.

Why not Litestar's `AbstractAuthenticationMiddleware` / `JWTAuth`: both treat a route as either
excluded or authenticated, while anonymous routes here still authenticate whoever sends credentials,
and the session check shares its Redis round trip with the rate limiter (see app/lib/ratelimit.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import structlog
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.audit import service as audit_service
from app.auth import api_keys, service, sessions, tokens
from app.config import RateLimitRule, Settings
from app.lib.context import RequestContext, request_context
from app.lib.errors import BadRequest, Unauthorized
from app.lib.ratelimit import DEFAULT_GROUP, FAILURES_GROUP, Counter, RateLimited, RateLimiter, refuse
from app.lib.security import Principal, is_open_path
from app.lib.timeutil import utcnow

log = structlog.get_logger(__name__)
AUDITED_REFUSAL_PREFIX = "auth:audit:rejected:"
_AUTHORIZATION = b"authorization"
_API_KEY = api_keys.API_KEY_HEADER.lower().encode()


class VerifiedTokens:
    """Access tokens whose signature and claims this process already verified, until they expire.

    PyJWT spends ~100 µs per decode (most of it checking base64 characters one by one), more than the
    rest of authentication; a client sends the same token for up to 15 minutes, so each process
    verifies it once. Only the verdict on the token's own bytes is cached: whether its session still
    holds is asked of Redis on every request.
    """

    def __init__(self, settings: Settings, maxsize: int = 10_000) -> None:
        self.settings = settings
        self.maxsize = maxsize
        self.leeway = tokens.DEFAULT_LEEWAY
        self._claims: OrderedDict[str, tokens.AccessClaims] = OrderedDict()

    def decode(self, token: str) -> tokens.AccessClaims:
        claims = self._claims.get(token)
        if claims is not None:
            if claims.expires_at + self.leeway > utcnow():
                self._claims.move_to_end(token)
                return claims
            del self._claims[token]
        claims = sessions.decode_bearer(self.settings, token)  # raises Unauthorized with its reason
        self._claims[token] = claims
        if len(self._claims) > self.maxsize:
            self._claims.popitem(last=False)
        return claims


class Authenticator:
    """Turns a request's credentials into a Principal, counting it against the rate limits on the way."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verified = VerifiedTokens(settings)
        self.rate_limiter = (
            RateLimiter(settings.auth.rate_limits) if settings.auth.rate_limit_enabled else None
        )
        self.key_usage = KeyUsage()

    async def authenticate(
        self, redis: Redis, headers: dict[bytes, bytes], ip: str, group: str | None
    ) -> Principal | None:
        limiter = self.rate_limiter if group is not None else None
        authorization, api_key = headers.get(_AUTHORIZATION), headers.get(_API_KEY)
        if authorization is not None and api_key is not None:
            # Which one would act is a guess either way (RFC 6750 2: one method per request): refuse both.
            raise BadRequest("send either Authorization or X-API-Key, not both", code="ambiguous_credentials")
        if authorization is not None:
            return await self._bearer(redis, authorization.decode("latin-1"), ip, group, limiter)
        if api_key is not None:
            return await self._api_key(redis, api_key.decode("latin-1"), ip, group, limiter)
        if limiter is not None:
            decision = await limiter.hit(redis, [limiter.ip(group, ip)])
            if not decision.allowed:
                raise refuse(decision)
        return None

    async def count_open(self, redis: Redis, ip: str, group: str) -> None:
        """Count a request to an open route (probes, scrapers); 429 when over its limit.

        When Redis cannot count, the request goes through: readiness must still be able to say that
        Redis is down, and its answer is cached per process, so a flood cannot reach the dependencies.
        """
        if self.rate_limiter is None:
            return
        try:
            decision = await self.rate_limiter.hit(redis, [self.rate_limiter.ip(group, ip)])
        except (RedisError, OSError) as exc:
            log.warning("auth.rate_limit.unavailable", group=group, error=type(exc).__name__)
            return
        if not decision.allowed:
            raise refuse(decision)

    async def _bearer(
        self, redis: Redis, authorization: str, ip: str, group: str | None, limiter: RateLimiter | None
    ) -> Principal:
        scheme, _, token = authorization.strip().partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized(
                    "the Authorization header must be 'Bearer <token>'", code="invalid_authorization_header"
                )
            claims = self.verified.decode(token.strip())
        except Unauthorized:
            await _count_failure(redis, limiter, group, ip, request_counted=False)
            raise

        counters = [limiter.ip(group, ip), limiter.principal(group, f"u:{claims.subject}")] if limiter else []
        cached_session, cached_roles = await _count_and_read(
            redis,
            limiter,
            counters,
            sessions.session_key(claims.session_id),
            service.roles_key(claims.subject),
        )

        if cached_session is None:  # not cached (evicted, Redis restarted): MongoDB decides
            wallet = await sessions.session_wallet(redis, self.settings, claims.session_id)
        else:
            wallet = cached_session.decode() if isinstance(cached_session, bytes) else cached_session
            if wallet == sessions.REVOKED:
                wallet = None
        if wallet is None:
            await _count_failure(redis, limiter, group, ip, request_counted=True)
            raise Unauthorized("the session has ended (logged out or revoked)", code="session_revoked")
        if cached_roles is not None:
            roles_text = cached_roles.decode() if isinstance(cached_roles, bytes) else cached_roles
            roles = frozenset(r for r in roles_text.split(",") if r)
        else:
            roles = frozenset(claims.roles)
        return Principal(
            user_id=claims.subject,
            wallet_address=wallet,
            roles=roles,
            kind="user",
            session_id=claims.session_id,
        )

    async def _api_key(
        self, redis: Redis, key: str, ip: str, group: str | None, limiter: RateLimiter | None
    ) -> Principal:
        key = key.strip()
        try:
            key_id = api_keys.parse_api_key(key)
        except Unauthorized:
            await _count_failure(redis, limiter, group, ip, request_counted=False)
            raise
        cache_key = api_keys.api_key_cache_key(tokens.hash_api_key(key))
        generation_key = api_keys.api_key_generation_key(key_id)
        key_counter, failures = None, None
        if limiter is None:
            cached, generation = await redis.mget(cache_key, generation_key)
        else:
            # The key id is public (it is in the key's clear part), so naming a key must not spend its
            # quota: the key is charged only once its secret is proven. A cache entry is named by the hash
            # of the whole key, so only the right secret finds one; the script charges the key only then.
            key_counter = limiter.principal(group, f"k:{key_id}")
            cached, generation, failures = await _count_and_read(
                redis,
                limiter,
                [limiter.ip(group, ip)],
                cache_key,
                generation_key,
                limiter.failures(ip).key,
                proven=[key_counter],
                proof=cache_key,
            )
        try:
            principal = api_keys.api_key_from_cache(cached, generation, key_id)
            if principal is not None:
                self.key_usage.note(redis, principal.user_id, key_id)
                return principal
            # A miss or a stale entry: MongoDB decides, and its answer is cached.
            proven = cached is not None  # a stale entry still took the whole key to name
            if limiter is not None and not proven and int(failures or 0) >= limiter.failures(ip).limit:
                # This IP is past its failed-credentials limit: no more lookups for it in this window.
                await _count_failure(redis, limiter, group, ip, request_counted=True)
            principal = await api_keys.authenticate_api_key(
                redis, key, generation=api_keys.as_generation(generation)
            )
        except Unauthorized:
            await _count_failure(redis, limiter, group, ip, request_counted=True)
            raise
        self.key_usage.recorded(key_id)  # the lookup wrote lastUsed if it was due
        if key_counter is not None and not proven:  # proven only now: charge the key
            decision = await limiter.hit(redis, [key_counter])
            if not decision.allowed:
                raise refuse(decision)
        return principal


class KeyUsage:
    """Writes API keys' `lastUsed` in the background, asking at most once a minute per key per process.

    Across processes `api_keys.record_api_key_use` keeps it to one write a minute per key (a Redis
    marker); this only spares the cache-hit path a task and a round trip on all the other requests.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self.interval = api_keys.API_KEY_LAST_USED_RESOLUTION.total_seconds()
        self._asked: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def recorded(self, key_id: str) -> None:
        self._remember(key_id, time.monotonic())

    def note(self, redis: Redis, user_id: str, key_id: str) -> None:
        now = time.monotonic()
        asked = self._asked.get(key_id)
        if asked is not None and now - asked < self.interval:
            return
        self._remember(key_id, now)
        task = asyncio.create_task(self._record(redis, user_id, key_id))
        self._tasks.add(task)  # a reference, so the task is not garbage-collected while it runs
        task.add_done_callback(self._tasks.discard)

    def _remember(self, key_id: str, now: float) -> None:
        self._asked[key_id] = now
        if len(self._asked) > self.maxsize:
            self._asked = {k: t for k, t in self._asked.items() if now - t < self.interval}

    async def _record(self, redis: Redis, user_id: str, key_id: str) -> None:
        try:
            await api_keys.record_api_key_use(redis, user_id, key_id)
        except Exception:  # bookkeeping only: the request it came from was already served
            log.warning("auth.api_key.last_used_failed", key_id=key_id, exc_info=True)


def _refusal_context(scope: Scope) -> RequestContext:
    # Refusals are recorded by where they came from, never as a principal the request may have proved.
    return replace(request_context(ASGIConnection(scope)), principal=None)


async def _audit_refusal(
    scope: Scope,
    action: str,
    reason: str,
    entity_id: str | None,
    *,
    once: tuple[Redis, str, int] | None = None,
) -> None:
    """Record a refusal; with `once` (redis, marker, window), only the first of its window is written."""
    fields = {
        "context": _refusal_context(scope),
        "entity_type": "credentials",
        "entity_id": entity_id,
        "success": False,
        "reason": reason,
    }
    try:
        if once is None:
            await audit_service.record(action, **fields)
        else:
            await audit_service.record_once(*once, action, **fields)
    except Exception:  # the refusal stands whether or not it could be written down
        log.exception("auth.audit_failed", action=action)


async def _audit_rate_limited(scope: Scope, exc: RateLimited) -> None:
    if exc.decision is not None and exc.decision.first_refusal:  # once per window, not per request
        decision = exc.decision
        await _audit_refusal(scope, "auth.rate_limited", f"{decision.group}:{decision.scope}", decision.group)


def authentication_middleware(settings: Settings) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware factory for `create_app()`'s middleware list (after request ids and metrics)."""
    authenticator = Authenticator(settings)
    audit_window_s = settings.auth.rate_limits.get(FAILURES_GROUP, RateLimitRule()).window_s

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            scope_type = scope["type"]
            if scope_type not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
                scope["user"] = None
                await app(scope, receive, send)
                return
            opt = scope["route_handler"].opt
            client = scope.get("client")
            ip = client[0] if client else "unknown"
            if is_open_path(scope["path"]):
                scope["user"] = None
                group = opt.get("rate_limit")
                if group is not None:
                    try:
                        await authenticator.count_open(scope["litestar_app"].state.clients.redis, ip, group)
                    except RateLimited as exc:
                        await _audit_rate_limited(scope, exc)
                        raise
                await app(scope, receive, send)
                return
            method = scope.get("method")
            anonymous = bool(opt.get("anonymous")) or method == "OPTIONS"
            # A WebSocket handshake counts only where its route names a group (the stream does).
            group = (
                opt.get("rate_limit", DEFAULT_GROUP)
                if scope_type == ScopeType.HTTP
                else opt.get("rate_limit")
            )
            headers = dict(scope["headers"])
            redis = scope["litestar_app"].state.clients.redis
            try:
                principal = await authenticator.authenticate(redis, headers, ip, group)
            except Unauthorized as exc:
                kind = "bearer" if _AUTHORIZATION in headers else "api_key"
                # A flood of garbage credentials writes one entry per (ip, reason) and window.
                marker = f"{AUDITED_REFUSAL_PREFIX}{ip}:{exc.code}"
                once = (redis, marker, audit_window_s)
                await _audit_refusal(scope, "auth.credentials_rejected", exc.code, kind, once=once)
                raise
            except RateLimited as exc:
                await _audit_rate_limited(scope, exc)
                raise
            if principal is None and not anonymous:
                raise Unauthorized("authentication required", code="authentication_required")
            scope["user"] = principal
            await app(scope, receive, send)

        return middleware

    return factory


async def _count_failure(
    redis: Redis, limiter: RateLimiter | None, group: str | None, ip: str, *, request_counted: bool
) -> None:
    """Count refused credentials against the IP's failure limit (and the request, if not yet); 429 past it."""
    if limiter is None:
        return
    counters = [limiter.failures(ip)] if request_counted else [limiter.ip(group, ip), limiter.failures(ip)]
    decision = await limiter.hit(redis, counters)
    if not decision.allowed:
        raise refuse(decision) from None


async def _count_and_read(
    redis: Redis,
    limiter: RateLimiter | None,
    counters: list[Counter],
    *keys: str,
    proven: list[Counter] | None = None,
    proof: str | None = None,
) -> list:
    """Count the request against its limits and read `keys`, in one round trip; 429 when over a limit."""
    pipe = redis.pipeline(transaction=False)
    if limiter is not None:
        limiter.queue(pipe, counters, proven=proven or (), proof=proof)
    pipe.mget(*keys)
    results = await pipe.execute()
    if limiter is not None:
        decision = limiter.decide(results[0], [*counters, *(proven or ())])
        if not decision.allowed:
            raise refuse(decision)
    return results[-1]
