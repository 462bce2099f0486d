"""The rate limiter's counters on the real Redis, and the groups' settings."""

from app.config import RateLimitRule, Settings
from app.lib.ratelimit import FAILURES_GROUP, RateLimiter


async def test_a_principal_is_charged_only_when_its_proof_exists(client, clients):
    limiter = RateLimiter({"default": RateLimitRule(per_ip=100, per_principal=2)})
    ip, key = limiter.ip("default", "192.0.2.1"), limiter.principal("default", "k:abc")

    async def hit(proof: str):
        pipe = clients.redis.pipeline(transaction=False)
        limiter.queue(pipe, [ip], proven=[key], proof=proof)
        (result,) = await pipe.execute()
        return limiter.decide(result, [ip, key])

    for _ in range(5):  # naming the key without its proof costs it nothing
        assert (await hit("proof:missing")).allowed
    assert await clients.redis.get(key.key) is None
    await clients.redis.set("proof:present", "1")
    assert [(await hit("proof:present")).allowed for _ in range(3)] == [True, True, False]
    refused = await hit("proof:present")
    assert refused.scope == "principal" and refused.group == "default" and refused.retry_after_s >= 1
    assert int(await clients.redis.get(ip.key)) == 9  # the IP counted every request


def test_tuning_one_group_keeps_the_other_groups_defaults(monkeypatch):
    monkeypatch.setenv("AUTH_RATE_LIMITS", '{"system": {"per_ip": 5}}')
    rules = Settings(_env_file=None).auth.rate_limits
    assert rules["system"].per_ip == 5
    assert rules["auth"].per_ip == 30 and rules[FAILURES_GROUP].per_ip == 30
