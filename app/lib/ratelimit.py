"""Rate limits kept in Redis, so they hold across every api process: per client IP and per principal.

Why not Litestar's `RateLimitConfig` over a `RedisStore`: its middleware reads the request history,
appends to it and writes it back under a process-local `anyio.Lock`, so two api processes can both
read N-1 and both let a request through; it has one limit per config (no per-group limits without a
middleware per group), answers 429 with `RateLimit-*` headers but no `Retry-After`, and would cost a
Redis round trip of its own on every request. Here one Lua script increments every counter a request
touches atomically (fixed windows: INCR, and PEXPIRE on the window's first hit), and the
authentication middleware sends it in the same Redis pipeline as its session-revocation lookup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.config import RateLimitRule
from app.lib.errors import AppError

DEFAULT_GROUP = "default"
KEY_PREFIX = "rl:"

# KEYS: counters; ARGV[1]: window in ms. Returns, per key, its count and its remaining ttl in ms.
_FIXED_WINDOW_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if count == 1 or ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    scope: str  # "ip" or "principal": which counter refused
    count: int = 0

    @property
    def first_refusal(self) -> bool:
        """The first request refused in this window (worth recording; the rest of a flood is not)."""
        return self.count == self.limit + 1


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"
    decision: Decision | None = None


class RateLimiter:
    """Counts requests per (group, ip) and (group, principal) in Redis, one round trip per request."""

    def __init__(self, rules: Mapping[str, RateLimitRule]) -> None:
        self._rules = dict(rules)
        self._rules.setdefault(DEFAULT_GROUP, RateLimitRule())

    def rule(self, group: str | None) -> RateLimitRule:
        return self._rules.get(group or DEFAULT_GROUP) or self._rules[DEFAULT_GROUP]

    def _keys(self, group: str, ip: str, principal: str | None) -> list[tuple[str, str, int]]:
        rule = self.rule(group)
        keys = [(f"{KEY_PREFIX}{group}:ip:{ip}", "ip", rule.per_ip)]
        if principal:
            keys.append((f"{KEY_PREFIX}{group}:p:{principal}", "principal", rule.per_principal))
        return keys

    def queue(self, pipe: Pipeline, group: str, ip: str, principal: str | None = None) -> None:
        """Add this request's counters to `pipe`; read the answer with `decide()`."""
        keys = self._keys(group, ip, principal)
        # EVAL, not redis-py's Script: in a pipeline that one sends SCRIPT EXISTS first, a second round
        # trip on every request. Redis caches the compiled script by its hash either way.
        pipe.eval(_FIXED_WINDOW_LUA, len(keys), *(k for k, _, _ in keys), self.rule(group).window_s * 1000)

    def decide(self, result: list[int], group: str, ip: str, principal: str | None = None) -> Decision:
        """The verdict from what `queue()` returned: refused if any counter is over its limit."""
        keys = self._keys(group, ip, principal)
        verdict: Decision | None = None
        for index, (_, scope, limit) in enumerate(keys):
            count, ttl_ms = int(result[2 * index]), int(result[2 * index + 1])
            decision = Decision(
                allowed=count <= limit,
                limit=limit,
                remaining=max(limit - count, 0),
                retry_after_s=max(1, math.ceil(ttl_ms / 1000)),
                scope=scope,
                count=count,
            )
            if not decision.allowed:
                return decision
            if verdict is None or decision.remaining < verdict.remaining:
                verdict = decision
        assert verdict is not None
        return verdict

    async def hit(self, redis: Redis, group: str, ip: str, principal: str | None = None) -> Decision:
        """Count one request on its own (outside the authentication middleware's pipeline)."""
        pipe = redis.pipeline(transaction=False)
        self.queue(pipe, group, ip, principal)
        (result,) = await pipe.execute()
        return self.decide(result, group, ip, principal)


def refuse(decision: Decision) -> RateLimited:
    """The 429 for a refused decision, with Retry-After, in the API's error format."""
    error = RateLimited(
        f"too many requests; retry in {decision.retry_after_s} s",
        details={"limit": decision.limit, "scope": decision.scope, "retryAfter": decision.retry_after_s},
        headers={"Retry-After": str(decision.retry_after_s)},
    )
    error.decision = decision
    return error
