"""Rate limits kept in Redis, so they hold across every api process: per client IP and per principal.

Why not Litestar's `RateLimitConfig` over a `RedisStore`: its middleware reads the request history,
appends to it and writes it back under a process-local `anyio.Lock`, so two api processes can both
read N-1 and both let a request through; it has one limit per config (no per-group limits without a
middleware per group), answers 429 with `RateLimit-*` headers but no `Retry-After`, and would cost a
Redis round trip of its own on every request. Here one Lua script increments every counter a request
touches atomically (fixed windows: INCR, and PEXPIRE on the window's first hit), and the
authentication middleware sends it in the same Redis pipeline as its session-revocation lookup.

A principal is charged only once its credentials are proven: a caller who merely names an API key
(its id is public) must not spend that key's quota. Failed credentials are counted per IP on their own
counter (`FAILURES_GROUP`), with a limit of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.config import RateLimitRule
from app.lib.errors import AppError

DEFAULT_GROUP = "default"
FAILURES_GROUP = "failed_credentials"
KEY_PREFIX = "rl:"

# KEYS: counters, then (optionally) a proof key. ARGV: each counter's window in ms, then how many of
# the counters always count; the others count only when the proof key exists. Returns, per counter,
# its count and its remaining ttl in ms (0 and 0 for a counter left alone).
_FIXED_WINDOW_LUA = """
local n = #ARGV - 1
local always = tonumber(ARGV[#ARGV])
local proven = #KEYS > n and redis.call('EXISTS', KEYS[#KEYS]) == 1
local out = {}
for i = 1, n do
  local count, ttl = 0, 0
  if i <= always or proven then
    count = redis.call('INCR', KEYS[i])
    ttl = redis.call('PTTL', KEYS[i])
    if count == 1 or ttl < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[i])
      ttl = tonumber(ARGV[i])
    end
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out
"""


@dataclass(frozen=True, slots=True)
class Counter:
    """One fixed-window counter: its Redis key, the group and scope it counts, and its limit."""

    key: str
    group: str
    scope: str  # "ip", "principal" or "failed_credentials"
    limit: int
    window_s: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    scope: str  # which counter refused (or came closest): "ip", "principal" or "failed_credentials"
    count: int = 0
    group: str = DEFAULT_GROUP

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

    def ip(self, group: str, ip: str) -> Counter:
        rule = self.rule(group)
        return Counter(f"{KEY_PREFIX}{group}:ip:{ip}", group, "ip", rule.per_ip, rule.window_s)

    def principal(self, group: str, principal: str) -> Counter:
        rule = self.rule(group)
        return Counter(
            f"{KEY_PREFIX}{group}:p:{principal}", group, "principal", rule.per_principal, rule.window_s
        )

    def failures(self, ip: str) -> Counter:
        """The counter of failed credentials from this IP, whatever route they were sent to."""
        rule = self.rule(FAILURES_GROUP)
        return Counter(
            f"{KEY_PREFIX}{FAILURES_GROUP}:ip:{ip}",
            FAILURES_GROUP,
            FAILURES_GROUP,
            rule.per_ip,
            rule.window_s,
        )

    def queue(
        self,
        pipe: Pipeline,
        counters: Sequence[Counter],
        *,
        proven: Sequence[Counter] = (),
        proof: str | None = None,
    ) -> None:
        """Add `counters` to `pipe`, and `proven` too if the key `proof` exists; read it with `decide()`."""
        keys = [c.key for c in (*counters, *proven)]
        if proven:
            keys.append(proof)
        windows = [c.window_s * 1000 for c in (*counters, *proven)]
        # EVAL, not redis-py's Script: in a pipeline that one sends SCRIPT EXISTS first, a second round
        # trip on every request. Redis caches the compiled script by its hash either way.
        pipe.eval(_FIXED_WINDOW_LUA, len(keys), *keys, *windows, len(counters))

    def decide(self, result: list[int], counters: Sequence[Counter]) -> Decision:
        """The verdict from what `queue()` returned: refused if any counter is over its limit."""
        verdict: Decision | None = None
        for index, counter in enumerate(counters):
            count, ttl_ms = int(result[2 * index]), int(result[2 * index + 1])
            decision = Decision(
                allowed=count <= counter.limit,
                limit=counter.limit,
                remaining=max(counter.limit - count, 0),
                retry_after_s=max(1, math.ceil(ttl_ms / 1000)),
                scope=counter.scope,
                count=count,
                group=counter.group,
            )
            if not decision.allowed:
                return decision
            if verdict is None or decision.remaining < verdict.remaining:
                verdict = decision
        assert verdict is not None
        return verdict

    async def hit(self, redis: Redis, counters: Sequence[Counter]) -> Decision:
        """Count one request on these counters on its own (outside the middleware's pipeline)."""
        pipe = redis.pipeline(transaction=False)
        self.queue(pipe, counters)
        (result,) = await pipe.execute()
        return self.decide(result, counters)


def refuse(decision: Decision) -> RateLimited:
    """The 429 for a refused decision, with Retry-After, in the API's error format."""
    error = RateLimited(
        f"too many requests; retry in {decision.retry_after_s} s",
        details={"limit": decision.limit, "scope": decision.scope, "retryAfter": decision.retry_after_s},
        headers={"Retry-After": str(decision.retry_after_s)},
    )
    error.decision = decision
    return error
