"""The pure arithmetic of oracle rounds: medians, bands, weights, judging, gates and the publication rule."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from oracle.rounds import (
    MAX_WEI,
    Z90,
    Answer,
    GateLimits,
    Observation,
    Published,
    TypeRule,
    answer,
    band_from_confidence,
    decide,
    gates,
    judge,
    sigma,
    weight,
    weighted_median,
)

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
ETH = 10**18
RULE = TypeRule(min_wei=ETH, max_wei=1000 * ETH, deviation_bps=50, heartbeat_s=3600)
LIMITS = GateLimits(jump_sigmas=4.0, min_confidence=60.0, max_age_s=600, max_unhealthy_share=0.5)


def _obs(key: str, price: int, spread_bps: int = 500, w: float = 1.0, unhealthy: tuple[str, ...] = ()):
    margin = price * spread_bps // 10_000
    return Observation(key, price, price - margin, price + margin, 80.0, w, NOW, unhealthy)


def _answer(price: int, low: int | None = None, high: int | None = None, confidence=80.0, age_s=0):
    low, high = price if low is None else low, price if high is None else high
    return Answer(price, low, high, confidence, NOW - timedelta(seconds=age_s), 3)


def _passed(checks) -> dict[str, bool]:
    return {check.gate: check.passed for check in checks}


def _brute_median(values: list[tuple[float, float]]) -> float:
    total = sum(w for _, w in values)
    return min(v for v, _ in values if 2 * sum(w for x, w in values if x <= v) >= total)


def test_weighted_median_with_equal_weights_is_the_lower_median() -> None:
    assert weighted_median([(3, 1), (1, 1), (2, 1)]) == 2
    assert weighted_median([(4, 1), (1, 1), (3, 1), (2, 1)]) == 2
    assert weighted_median([(2.5, 1), (1.5, 1)]) == 1.5
    assert weighted_median([(9, 0.3)]) == 9


def test_weighted_median_follows_a_heavy_weight_and_ignores_order_and_ties() -> None:
    values = [(1, 1.0), (2, 1.0), (100, 5.0), (3, 1.0)]
    assert weighted_median(values) == 100
    assert weighted_median([(1, 5.0), (2, 1.0), (100, 1.0)]) == 1
    assert weighted_median([(1, 2.0), (2, 1.0), (3, 1.0)]) == 1  # exactly half is enough
    rng = random.Random(0)
    for _ in range(20):
        rng.shuffle(values)
        assert weighted_median(values) == 100
    assert weighted_median([(7, w) for w in (0.5, 3.0, 1.0)]) == 7
    with pytest.raises(ValueError):
        weighted_median([])


def test_weighted_median_matches_its_definition() -> None:
    rng = random.Random(42)
    for _ in range(2000):
        values = [(rng.randint(0, 20), float(rng.randint(1, 10))) for _ in range(rng.randint(1, 12))]
        assert weighted_median(values) == _brute_median(values), values


def test_band_from_confidence_inverts_the_score() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        price, confidence = rng.randrange(10**17, 10**24), rng.uniform(1.0, 99.99)
        low, high = band_from_confidence(price, confidence)
        assert low < price < high
        assert 100 * low / high == pytest.approx(confidence, rel=1e-9)
        assert low * high == pytest.approx(price * price, rel=1e-9)  # symmetric in log price


def test_band_from_confidence_is_clamped() -> None:
    # Below 1 (0 included) the band is the one of confidence 1: a tenth to ten times the price.
    assert band_from_confidence(ETH, 0) == band_from_confidence(ETH, -5) == (ETH // 10, 10 * ETH)
    assert band_from_confidence(ETH, 0) == band_from_confidence(ETH, 1)
    assert band_from_confidence(ETH, 150) == band_from_confidence(ETH, 100) == (ETH, ETH)
    assert band_from_confidence(MAX_WEI // 2, 10)[1] == MAX_WEI


def test_band_from_confidence_contains_the_price_even_at_full_confidence() -> None:
    """BUG: float arithmetic drops the low wei of prices above 2**53, so at confidence 100 the band
    (int(price * 1.0), int(price / 1.0)) misses a price of 1 ETH + 1 wei."""
    for price in (ETH + 1, 1_234_567_890_123_456_789, 2**53 + 3):
        low, high = band_from_confidence(price, 100)
        assert low <= price <= high, (price, low, high)


def test_weight_is_the_inverse_mdape_once_scored() -> None:
    assert weight([0.5] * 4, min_scored=5, default=0.3) == 0.3
    assert weight([0.04, 0.05, 0.06], min_scored=3, default=0.3) == pytest.approx(20)
    assert weight([0.04, 0.06], min_scored=2, default=0.3) == pytest.approx(20)
    assert weight([0.001, 0.002, 0.0], min_scored=3, default=0.3) == pytest.approx(100)
    assert weight([0.0] * 5, min_scored=3, default=0.3) == pytest.approx(100)


def test_judge_rejects_a_high_outlier_among_three_honest_observers() -> None:
    honest = [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("c", 99 * ETH)]
    verdicts = {v.key: v for v in judge([*honest, _obs("x", 1000 * ETH)])}
    assert [verdicts[k].accepted for k in "abc"] == [True, True, True]
    outlier = verdicts["x"]
    assert not outlier.accepted and outlier.reason.startswith("outside_band: above")
    assert outlier.band == (95 * ETH, 105 * ETH)  # the others' median low and median high


def test_judge_rejects_a_low_outlier() -> None:
    observations = [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("c", 99 * ETH), _obs("x", 10 * ETH)]
    verdicts = {v.key: v for v in judge(observations)}
    assert not verdicts["x"].accepted and verdicts["x"].reason.startswith("outside_band: below")
    assert all(verdicts[k].accepted for k in "abc")


def test_judge_with_two_observers_never_rejects() -> None:
    verdicts = judge([_obs("a", 100 * ETH), _obs("x", 1000 * ETH, w=100)])
    assert [(v.accepted, v.reason, v.band) for v in verdicts] == [(True, None, None)] * 2


def test_judge_a_heavy_outlier_cannot_outvote_the_honest_observers() -> None:
    """Verdicts are one vote per observer: a heavy weight (an excellent record gone wrong) makes the
    answer, never the band the others are judged against."""
    honest = [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("c", 99 * ETH)]
    verdicts = {v.key: v for v in judge([*honest, _obs("x", 1000 * ETH, w=100)])}
    assert verdicts["x"].reason.startswith("outside_band: above")
    assert all(verdicts[key].accepted for key in "abc")
    with pytest.raises(ValueError):
        answer([])


def test_answer_band_holds_the_price_and_is_made_of_given_values() -> None:
    rng = random.Random(3)
    for _ in range(1000):
        observations = []
        for i in range(rng.randint(1, 8)):
            low, price, high = sorted(rng.randrange(ETH, 200 * ETH) for _ in range(3))
            at = NOW - timedelta(seconds=rng.randint(0, 3600))
            observations.append(
                Observation(str(i), price, low, high, rng.uniform(0, 100), rng.uniform(0.1, 100), at)
            )
        result = answer(observations)
        assert result.low <= result.price <= result.high
        assert result.price in {o.price for o in observations}
        assert result.low in {o.low for o in observations}
        assert result.high in {o.high for o in observations}
        assert result.confidence in {o.confidence for o in observations}
        assert result.observed_at == max(o.at for o in observations)
        assert result.participants == len(observations)


def test_gate_bounds_are_inclusive() -> None:
    accepted = [_obs("a", ETH)]
    for price, passed in ((ETH, True), (ETH - 1, False), (1000 * ETH, True), (1000 * ETH + 1, False)):
        checks = gates(_answer(price), accepted, None, RULE, LIMITS, NOW)
        assert [c.gate for c in checks] == ["bounds", "jump", "sources", "confidence", "age"]
        assert _passed(checks) == {
            "bounds": passed,
            "jump": True,
            "sources": True,
            "confidence": True,
            "age": True,
        }


def test_jump_gate_in_sigmas_of_the_last_published_band() -> None:
    last = Published(100 * ETH, 95 * ETH, 105 * ETH, NOW - timedelta(hours=1))
    assert sigma(last) == pytest.approx(10 * ETH / (2 * Z90))
    accepted = [_obs("a", 100 * ETH)]
    jumped = gates(_answer(1000 * ETH), accepted, last, RULE, LIMITS, NOW)[1]
    assert not jumped.passed and "sigma, at most 4" in jumped.detail
    move = 12 * ETH
    exactly = GateLimits(move / sigma(last), 60.0, 600, 0.5)
    assert _passed(gates(_answer(112 * ETH), accepted, last, RULE, exactly, NOW))["jump"]
    assert not _passed(gates(_answer(112 * ETH + 10**15), accepted, last, RULE, exactly, NOW))["jump"]
    # A band of no width still has a sigma of one wei: k wei pass, k + 1 fail.
    point = Published(100 * ETH, 100 * ETH, 100 * ETH, NOW)
    assert sigma(point) == 1.0
    assert _passed(gates(_answer(100 * ETH - 4), accepted, point, RULE, LIMITS, NOW))["jump"]
    assert not _passed(gates(_answer(100 * ETH + 5), accepted, point, RULE, LIMITS, NOW))["jump"]
    first = gates(_answer(1000 * ETH), accepted, None, RULE, LIMITS, NOW)[1]
    assert first.passed and first.detail == "no published price"


def test_sources_gate_on_the_unhealthy_share_of_the_weight() -> None:
    sick = [_obs("a", 100 * ETH, w=3, unhealthy=("x",)), _obs("b", 100 * ETH), _obs("c", 100 * ETH)]
    check = gates(_answer(100 * ETH), sick, None, RULE, LIMITS, NOW)[2]
    assert not check.passed and check.detail == "60% of the weight on unhealthy sources: x"
    half = [_obs("a", 100 * ETH, w=2, unhealthy=("y", "x")), _obs("b", 100 * ETH, w=2)]
    check = gates(_answer(100 * ETH), half, None, RULE, LIMITS, NOW)[2]
    assert check.passed and check.detail.endswith(": x, y")


def test_confidence_and_age_gates() -> None:
    accepted = [_obs("a", 100 * ETH)]
    for confidence, passed in ((59.9, False), (60.0, True)):
        assert (
            _passed(gates(_answer(100 * ETH, confidence=confidence), accepted, None, RULE, LIMITS, NOW))[
                "confidence"
            ]
            is passed
        )
    for age, passed in ((601, False), (600, True)):
        assert (
            _passed(gates(_answer(100 * ETH, age_s=age), accepted, None, RULE, LIMITS, NOW))["age"] is passed
        )


def _last(minutes_ago: float) -> Published:
    return Published(100 * ETH, 99 * ETH, 101 * ETH, NOW - timedelta(minutes=minutes_ago))


def test_decide_abstains_on_low_confidence_even_when_the_heartbeat_is_due() -> None:
    low = _answer(130 * ETH, 129 * ETH, 131 * ETH, confidence=50.0)
    for last in (_last(120), None):
        decision = decide(low, last, RULE, 60.0, NOW)
        assert (decision.decision, decision.reason, decision.facts) == (
            "abstained",
            "low_confidence",
            {"confidence": 50.0},
        )


def test_decide_publishes_the_first_price() -> None:
    decision = decide(_answer(100 * ETH), None, RULE, 60.0, NOW)
    assert (decision.decision, decision.reason, decision.facts) == ("published", "first", {})


def test_decide_publishes_a_deviation_beyond_both_threshold_and_band() -> None:
    decision = decide(_answer(101 * ETH, 1008 * ETH // 10, 1012 * ETH // 10), _last(10), RULE, 60.0, NOW)
    assert (decision.decision, decision.reason) == ("published", "deviation")
    assert decision.facts == {
        "moveBps": 100.0,
        "deviationBps": 50,
        "bandBps": 20.0,
        "sinceLastS": 600,
        "heartbeatS": 3600,
    }


def test_decide_skips_a_move_over_the_threshold_but_inside_the_band() -> None:
    decision = decide(_answer(101 * ETH, 99 * ETH, 103 * ETH), _last(10), RULE, 60.0, NOW)
    assert (decision.decision, decision.reason) == ("skipped", "within_band")
    assert (decision.facts["moveBps"], decision.facts["bandBps"]) == (100.0, 200.0)
    # Exactly half the band's width is still inside it.
    decision = decide(_answer(101 * ETH, 100 * ETH, 102 * ETH), _last(10), RULE, 60.0, NOW)
    assert decision.reason == "within_band"


def test_decide_skips_a_move_within_the_deviation_threshold() -> None:
    for price in (1003 * ETH // 10, 1005 * ETH // 10, 995 * ETH // 10):  # 30 bps, exactly 50 bps, -50 bps
        decision = decide(_answer(price), _last(59), RULE, 60.0, NOW)
        assert (decision.decision, decision.reason) == ("skipped", "within_deviation")
    assert decision.facts["moveBps"] == 50.0 and decision.facts["sinceLastS"] == 59 * 60


def test_decide_publishes_on_the_heartbeat_alone() -> None:
    decision = decide(_answer(10001 * ETH // 100), _last(60), RULE, 60.0, NOW)  # 1 bps, an hour on
    assert (decision.decision, decision.reason) == ("published", "heartbeat")
    assert decision.facts["moveBps"] == 1.0 and decision.facts["sinceLastS"] == 3600
