"""The pure arithmetic of oracle rounds: medians, bands, weights, judging, the basis of an answer, gates,
the publication rule and the live record an observer's weight is made of."""

import math
import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from oracle.rounds import (
    MAX_HALF_WIDTH,
    MAX_WEI,
    MIN_HALF_WIDTH,
    MIN_PEERS,
    Z90,
    Answer,
    GateLimits,
    Observation,
    Published,
    Scored,
    TypeRule,
    answer,
    band_from_confidence,
    basis,
    decide,
    gates,
    judge,
    live_record,
    sigma,
    weight,
    weighted_median,
    widths,
)

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
ETH = 10**18
RULE = TypeRule(min_wei=ETH, max_wei=1000 * ETH, deviation_bps=50, heartbeat_s=3600)
LIMITS = GateLimits(jump_sigmas=4.0, min_confidence=60.0, max_age_s=600, max_unhealthy_share=0.5)


def _obs(key: str, price: int, spread_bps: int = 500, w: float = 1.0, unhealthy: tuple[str, ...] = ()):
    margin = price * spread_bps // 10_000
    return Observation(key, price, price - margin, price + margin, 80.0, w, NOW, unhealthy)


def _band(key: str, price: int, low: int, high: int, w: float = 1.0, confidence: float = 80.0):
    return Observation(key, price, low, high, confidence, w, NOW)


def _answer(price: int, low: int | None = None, high: int | None = None, confidence=80.0, age_s=0):
    low, high = price if low is None else low, price if high is None else high
    return Answer(price, low, high, confidence, NOW - timedelta(seconds=age_s), 3)


def _passed(checks) -> dict[str, bool]:
    return {check.gate: check.passed for check in checks}


def _brute_median(values):
    """The weighted median by its definition: the smallest value the weight up to and including which
    reaches half the total; when that weight is exactly half, the midpoint with the next larger value
    (rounded down for integers). Weights must be integers (as floats) so that "exactly" is exact."""
    total = sum(w for _, w in values)
    lower = min(v for v, _ in values if 2 * sum(w for x, w in values if x <= v) >= total)
    if 2 * sum(w for x, w in values if x <= lower) == total:
        upper = min(v for v, _ in values if v > lower)
        return (lower + upper) // 2 if isinstance(lower, int) else (lower + upper) / 2
    return lower


def test_weighted_median_with_equal_weights_and_an_even_count_is_the_midpoint() -> None:
    assert weighted_median([(3, 1), (1, 1), (2, 1)]) == 2
    assert weighted_median([(10, 1), (1, 1), (4, 1), (2, 1)]) == 3  # midway between 2 and 4
    assert weighted_median([(1, 1), (2, 1)]) == 1  # integers: the midpoint rounds down
    assert weighted_median([(2.5, 1), (1.5, 1)]) == 2.0
    assert weighted_median([(9, 0.3)]) == 9
    # Wei stay exact past 2**53 (a float midpoint would lose the last digits)
    big = weighted_median([(10**30 + 1, 1.0), (10**30 + 4, 1.0)])
    assert big == 10**30 + 2 and isinstance(big, int)
    # Fractions (the bands' widths) meet exactly halfway
    half = weighted_median([(Fraction(1, 3), 1.0), (Fraction(1, 2), 1.0)])
    assert half == Fraction(5, 12) and isinstance(half, Fraction)
    # a run of equal values across the half: the midpoint with the next value that is not in the run
    assert weighted_median([(3, 1), (3, 1), (5, 1), (7, 1)]) == 4
    assert weighted_median([(3, 1), (5, 1), (5, 1), (7, 1)]) == 5


def test_weighted_median_follows_a_heavy_weight_and_ignores_order_and_ties() -> None:
    values = [(1, 1.0), (2, 1.0), (100, 5.0), (3, 1.0)]
    assert weighted_median(values) == 100
    assert weighted_median([(1, 5.0), (2, 1.0), (100, 1.0)]) == 1
    # exactly half the weight: midway to the next value, whoever holds the half
    assert weighted_median([(1.0, 2.0), (2.0, 1.0), (3.0, 1.0)]) == 1.5
    assert weighted_median([(1.0, 2.0001), (2.0, 1.0), (3.0, 1.0)]) == 1.0  # past half: that value alone
    rng = random.Random(0)
    for _ in range(20):
        rng.shuffle(values)
        assert weighted_median(values) == 100
    assert weighted_median([(7, w) for w in (0.5, 3.0, 1.0)]) == 7
    with pytest.raises(ValueError):
        weighted_median([])


def test_weighted_median_takes_a_half_lost_to_float_rounding_as_exactly_half() -> None:
    # 0.2 is half of 0.2 + 0.15 + 0.05, but in floats twice 0.2 is 0.4 and the sum 0.39999999999999997
    assert weighted_median([(1.0, 0.2), (2.0, 0.15), (3.0, 0.05)]) == 1.5
    assert weighted_median([(3.0, 0.05), (1.0, 0.2), (2.0, 0.15)]) == 1.5
    assert weighted_median([(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]) == 2.5


def test_weighted_median_matches_its_definition() -> None:
    rng = random.Random(42)
    for _ in range(2000):
        values = [(rng.randint(0, 20), float(rng.randint(1, 10))) for _ in range(rng.randint(1, 12))]
        assert weighted_median(values) == _brute_median(values), values
        exact = [(Fraction(v, 7), w) for v, w in values]
        assert weighted_median(exact) == _brute_median(exact), exact


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


def test_widths_are_exact_fractions_of_the_price_clamped_from_a_hundredth_to_half_of_it() -> None:
    assert (Fraction(1, 100), Fraction(1, 2)) == (MIN_HALF_WIDTH, MAX_HALF_WIDTH)
    below, above = widths(_band("a", 100 * ETH, 90 * ETH, 125 * ETH))
    assert (below, above) == (Fraction(1, 10), Fraction(1, 4))
    assert isinstance(below, Fraction) and isinstance(above, Fraction)
    assert widths(_band("a", 3 * ETH + 1, 2 * ETH, 4 * ETH)) == (
        Fraction(ETH + 1, 3 * ETH + 1),
        Fraction(ETH - 1, 3 * ETH + 1),
    )
    assert widths(_band("a", 100 * ETH, 50 * ETH, 150 * ETH)) == (MAX_HALF_WIDTH, MAX_HALF_WIDTH)
    # one wei wider, or the whole range the oracle holds, counts no wider than half the price
    assert widths(_band("a", 100 * ETH, 50 * ETH - 1, 150 * ETH + 1)) == (MAX_HALF_WIDTH, MAX_HALF_WIDTH)
    assert widths(_band("a", 100 * ETH, 1, MAX_WEI)) == (MAX_HALF_WIDTH, MAX_HALF_WIDTH)
    # exactly 1% is itself; one wei narrower, half of it, or none at all (a point) counts as 1%
    assert widths(_band("a", 100 * ETH, 99 * ETH, 101 * ETH)) == (MIN_HALF_WIDTH, MIN_HALF_WIDTH)
    assert widths(_band("a", 100 * ETH, 99 * ETH + 1, 101 * ETH - 1)) == (MIN_HALF_WIDTH, MIN_HALF_WIDTH)
    assert widths(_band("a", 100 * ETH, 995 * ETH // 10, 1005 * ETH // 10)) == (
        MIN_HALF_WIDTH,
        MIN_HALF_WIDTH,
    )
    assert widths(_band("a", ETH, ETH, ETH)) == (MIN_HALF_WIDTH, MIN_HALF_WIDTH)
    assert widths(_band("a", 1, 1, 1)) == (MIN_HALF_WIDTH, MIN_HALF_WIDTH)  # one wei: still a fraction
    # each side on its own: a point below, the whole range above
    assert widths(_band("a", 100 * ETH, 100 * ETH, MAX_WEI)) == (MIN_HALF_WIDTH, MAX_HALF_WIDTH)
    assert widths(_band("a", 100 * ETH, 98 * ETH, 100 * ETH)) == (Fraction(1, 50), MIN_HALF_WIDTH)


def test_a_band_of_no_width_counts_one_hundredth_of_the_price_each_side() -> None:
    """No price is known to the wei: a point claims a certainty it cannot have, so it counts +-1%, in the
    bands the others are judged against and in the answer's band alike."""
    points = [_band(k, 100 * ETH, 100 * ETH, 100 * ETH, confidence=99.5) for k in "abc"]
    for price, accepted in (
        (100 * ETH, True),
        (101 * ETH, True),
        (99 * ETH, True),
        (101 * ETH + 1, False),
        (99 * ETH - 1, False),
    ):
        (verdict,) = [v for v in judge([*points, _band("x", price, price, price)]) if v.key == "x"]
        assert verdict.accepted is accepted, price
    result = answer(points)
    assert (result.price, result.low, result.high) == (100 * ETH, 99 * ETH, 101 * ETH)
    assert result.confidence == pytest.approx(100 * 99 / 101)  # 99.5 asked, 98.0 stood for


def test_judge_rejects_a_high_outlier_among_three_honest_observers() -> None:
    honest = [
        _band("a", 100 * ETH, 90 * ETH, 104 * ETH),  # widths 10% below, 4% above
        _band("b", 101 * ETH, 96 * ETH, 120 * ETH),  # 5/101 below, 19/101 above
        _band("c", 99 * ETH, 95 * ETH, 102 * ETH),  # 4/99 below, 3/99 above
    ]
    verdicts = {v.key: v for v in judge([*honest, _obs("x", 1000 * ETH)])}
    assert [(verdicts[k].accepted, verdicts[k].reason) for k in "abc"] == [(True, None)] * 3
    outlier = verdicts["x"]
    assert not outlier.accepted
    assert outlier.reason == "outside_band: above the bands of 3 of the 3 others"


def test_judge_rejects_a_low_outlier() -> None:
    observations = [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("c", 99 * ETH), _obs("x", 10 * ETH)]
    verdicts = {v.key: v for v in judge(observations)}
    assert not verdicts["x"].accepted
    assert verdicts["x"].reason == "outside_band: below the bands of 3 of the 3 others"
    assert all(verdicts[k].accepted for k in "abc")


def test_judge_holds_each_against_each_other_band_one_vote_each() -> None:
    """Rejected when more than half of the others' own bands (their prices with their clamped widths)
    leave the price out: here two of three. Not one band of the others' median price and widths, which
    (100 ETH -+ 2/110) would have rejected 95 and 110 ETH, each inside two of the three bands."""
    others = [
        _band("a", 100 * ETH, 60 * ETH, 101 * ETH),  # 40% below, 1% above: [60, 101] ETH
        _band("b", 110 * ETH, 108 * ETH, 112 * ETH),  # 2/110 each side: [108, 112] ETH
        _band("c", 90 * ETH, 89 * ETH, 150 * ETH),  # 1/90 below, 2/3 above counting 1/2: [89, 135] ETH
    ]
    above, below = "outside_band: above the bands of", "outside_band: below the bands of"
    for price, reason in (
        (100 * ETH, None),  # out of b's band only
        (95 * ETH, None),
        (110 * ETH, None),  # out of a's only
        (101 * ETH, None),  # a's high, inclusive
        (89 * ETH, None),  # c's low, inclusive
        (108 * ETH, None),  # b's low
        (135 * ETH, f"{above} 2 of the 3 others"),  # c's high, but above a's and b's
        (101 * ETH + 1, f"{below} 2 of the 3 others"),  # above a's, below b's: a tie says below
        (89 * ETH - 1, f"{below} 2 of the 3 others"),  # below b's and c's
        (60 * ETH, f"{below} 2 of the 3 others"),  # a's low, below b's and c's
        (135 * ETH + 1, f"{above} 3 of the 3 others"),
        (60 * ETH - 1, f"{below} 3 of the 3 others"),
    ):
        (verdict,) = [v for v in judge([*others, _band("x", price, price, price)]) if v.key == "x"]
        assert (verdict.accepted, verdict.reason) == (reason is None, reason), price


def test_judge_exactly_half_of_the_others_leaving_a_price_out_does_not_reject_it() -> None:
    others = [_obs("a", 100 * ETH), _obs("b", 100 * ETH), _obs("c", 120 * ETH), _obs("d", 120 * ETH)]
    # bands [95, 105] ETH twice and [114, 126] ETH twice
    for price, reason in (
        (100 * ETH, None),  # out of c's and d's: two of four
        (105 * ETH, None),
        (114 * ETH, None),  # out of a's and b's
        (126 * ETH, None),
        (105 * ETH + 1, "outside_band: below the bands of 4 of the 4 others"),  # 2 above, 2 below
        (114 * ETH - 1, "outside_band: below the bands of 4 of the 4 others"),
        (126 * ETH + 1, "outside_band: above the bands of 4 of the 4 others"),
    ):
        (verdict,) = [v for v in judge([*others, _band("x", price, price, price)]) if v.key == "x"]
        assert (verdict.accepted, verdict.reason) == (reason is None, reason), price
    # three of four is more than half
    three = [_obs("a", 100 * ETH), _obs("b", 120 * ETH), _obs("c", 120 * ETH), _obs("d", 120 * ETH)]
    (verdict,) = [v for v in judge([*three, _band("x", 100 * ETH, 0, 0)]) if v.key == "x"]
    assert verdict.reason == "outside_band: below the bands of 3 of the 4 others"
    # with five others, two out is less than half and three out more
    for high, reason in ((2, None), (3, "outside_band: below the bands of 3 of the 5 others")):
        five = [_obs(str(i), (120 if i < high else 100) * ETH) for i in range(5)]
        (verdict,) = [v for v in judge([*five, _obs("x", 100 * ETH)]) if v.key == "x"]
        assert (verdict.accepted, verdict.reason) == (reason is None, reason), high


def test_judge_matches_its_definition() -> None:
    """Each verdict against a count made independently: the others' bands from their widths clamped to
    [1%, 50%] of their prices (rounded outwards to the wei), one vote each, more than half rejecting."""
    rng = random.Random(11)

    def margin() -> int:  # none (a point), under 1%, or up to past 50% of the price
        return rng.choice((0, rng.randrange(0, ETH), rng.randrange(0, 80 * ETH)))

    for _ in range(500):
        observations = []
        for i in range(rng.randint(1, 8)):
            price = rng.randrange(60 * ETH, 140 * ETH)
            observations.append(_band(str(i), price, max(price - margin(), 1), price + margin()))
        for verdict, observation in zip(judge(observations), observations, strict=True):
            assert verdict.key == observation.key
            others = [o for o in observations if o is not observation]
            if len(others) < MIN_PEERS:
                assert (verdict.accepted, verdict.reason) == (True, None)
                continue
            x, above, below = observation.price, 0, 0
            for o in others:
                down = min(max(Fraction(o.price - o.low, o.price), Fraction(1, 100)), Fraction(1, 2))
                up = min(max(Fraction(o.high - o.price, o.price), Fraction(1, 100)), Fraction(1, 2))
                above += x > math.ceil(o.price * (1 + up))
                below += x < math.floor(o.price * (1 - down))
            if 2 * (above + below) > len(others):
                side = "above" if above > below else "below"
                reason = f"outside_band: {side} the bands of {above + below} of the {len(others)} others"
                assert (verdict.accepted, verdict.reason) == (False, reason)
            else:
                assert (verdict.accepted, verdict.reason) == (True, None)


def test_judge_needs_three_others_to_reject_anyone() -> None:
    assert MIN_PEERS == 3
    for observations in (
        [_obs("a", 100 * ETH), _obs("x", 1000 * ETH, w=100)],
        [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("x", 1000 * ETH)],  # two others: not enough
    ):
        verdicts = judge(observations)
        assert [(v.accepted, v.reason) for v in verdicts] == [(True, None)] * len(observations)
    four = {
        v.key: v
        for v in judge(
            [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("c", 99 * ETH), _obs("x", 1000 * ETH)]
        )
    }
    assert not four["x"].accepted


def test_judge_counts_no_band_wider_than_half_its_price() -> None:
    """Bands count at most +-50%: three others claiming the whole range still hold an observation to
    [price / 2, price * 3 / 2], and a wide band of its own does not keep an outlier in."""
    wide = [_band(k, 100 * ETH, 1, MAX_WEI) for k in "abc"]
    for price, accepted in (
        (150 * ETH, True),
        (50 * ETH, True),
        (150 * ETH + 1, False),
        (50 * ETH - 1, False),
        (1000 * ETH, False),
    ):
        (verdict,) = [v for v in judge([*wide, _band("x", price, 1, MAX_WEI)]) if v.key == "x"]
        assert verdict.accepted is accepted, price
    # a liar claiming the whole range is left out of every honest band ([500, 1500] ETH is its own)
    honest = [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("c", 99 * ETH)]
    verdicts = {v.key: v for v in judge([*honest, _band("x", 1000 * ETH, 1, MAX_WEI)])}
    assert not verdicts["x"].accepted and all(verdicts[k].accepted for k in "abc")
    # and its wide band, [65, 195] ETH, is one vote: it cannot keep in a price the honest bands leave out
    liar = _band("w", 130 * ETH, 1, MAX_WEI)
    verdicts = {v.key: v for v in judge([*honest, liar, _obs("y", 180 * ETH)])}
    assert verdicts["y"].reason == "outside_band: above the bands of 3 of the 4 others"


def test_judge_a_zero_width_liar_cannot_get_an_honest_observer_rejected() -> None:
    """A liar's band of no width (+-1%) anywhere leaves an honest observer out of one band more: one vote
    among four, never the majority the honest ones agree against. The liar itself stays in only inside
    the platform's and c's bands, where at most a's or b's leaves it out."""
    honest = [
        _obs("platform", 100 * ETH),  # [95, 105] ETH
        _obs("a", 104 * ETH),  # [98.8, 109.2] ETH: leaves b out
        _obs("b", 96 * ETH),  # [91.2, 100.8] ETH: leaves a out
        _obs("c", 100 * ETH),
    ]
    for tenths in range(500, 2001, 5):  # the liar anywhere from 50 to 200 ETH
        price = tenths * ETH // 10
        verdicts = {v.key: v for v in judge([*honest, _band("liar", price, price, price)])}
        assert all(verdicts[o.key].accepted for o in honest), price
        assert verdicts["liar"].accepted is (95 * ETH <= price <= 105 * ETH), price


def test_judge_rejects_two_liars_at_twice_the_price_among_the_platform_and_two_honest() -> None:
    """Each liar is inside the other's band only: out of three of its four others'. Each honest observer
    is out of the two liars' bands: exactly half, which does not reject."""
    honest = [_obs("platform", 100 * ETH), _obs("a", 101 * ETH), _obs("b", 99 * ETH)]
    for liars in (
        [_obs("x", 200 * ETH), _obs("y", 200 * ETH)],
        [_band("x", 200 * ETH, 200 * ETH, 200 * ETH), _band("y", 201 * ETH, 201 * ETH, 201 * ETH)],
        [_band("x", 200 * ETH, 1, MAX_WEI), _band("y", 200 * ETH, 1, MAX_WEI)],  # [100, 300] ETH each
    ):
        verdicts = {v.key: v for v in judge([*honest, *liars])}
        assert [verdicts[o.key].accepted for o in honest] == [True] * 3
        for liar in liars:
            assert verdicts[liar.key].reason == "outside_band: above the bands of 3 of the 4 others"
        accepted = [o for o in [*honest, *liars] if verdicts[o.key].accepted]
        assert answer(accepted).price == 100 * ETH


def test_judge_a_heavy_outlier_cannot_outvote_the_honest_observers() -> None:
    """Verdicts are one vote per observer: a heavy weight (an excellent record gone wrong) makes the
    answer, never the band the others are judged against."""
    honest = [_obs("a", 100 * ETH), _obs("b", 101 * ETH), _obs("c", 99 * ETH)]
    verdicts = {v.key: v for v in judge([*honest, _obs("x", 1000 * ETH, w=100)])}
    assert verdicts["x"].reason.startswith("outside_band: above")
    assert all(verdicts[key].accepted for key in "abc")
    with pytest.raises(ValueError):
        answer([])


def test_basis_is_everyone_from_three_on_else_the_platform_alone() -> None:
    platform, a, b, c = (_obs(k, p * ETH) for k, p in (("platform", 100), ("a", 200), ("b", 300), ("c", 400)))
    assert basis([a, b, c], "platform") == [a, b, c]  # operators alone, once they are three
    assert basis([platform, a, b], "platform") == [platform, a, b]
    assert basis([platform, a, b, c], "platform") == [platform, a, b, c]
    assert basis([a, platform], "platform") == [platform]  # one operator cannot outvote the platform
    assert basis([platform], "platform") == [platform]
    assert basis([a, b], "platform") is None  # two operators alone make no answer
    assert basis([a], "platform") is None
    assert basis([], "platform") is None
    assert basis([a, platform], "a") == [a]  # the anchor is whoever is named


def test_answer_is_the_median_price_with_the_median_widths_around_it() -> None:
    observations = [
        _band("a", 100 * ETH, 90 * ETH, 120 * ETH, confidence=90.0),  # 10% below, 20% above
        _band("b", 110 * ETH, 99 * ETH, 121 * ETH, confidence=80.0),  # 10%, 10%
        _band("c", 90 * ETH, 855 * ETH // 10, 945 * ETH // 10, confidence=95.0),  # 5%, 5%
    ]
    result = answer(observations)
    # 100 ETH -+ 10%: the high of 110 ETH is no observer's (the median of their highs is 120 ETH)
    assert (result.price, result.low, result.high) == (100 * ETH, 90 * ETH, 110 * ETH)
    assert result.high not in {o.high for o in observations}
    # the median confidence (90) is more than the band stands for: 100 * 90 / 110
    assert result.confidence == pytest.approx(100 * 90 / 110)
    assert (result.participants, result.observed_at) == (3, NOW)


def test_answer_confidence_is_the_weighted_median_within_what_the_band_stands_for() -> None:
    narrow = [
        _band(k, 100 * ETH, 99 * ETH, 101 * ETH, confidence=c)
        for k, c in zip("abc", (60.0, 70.0, 95.0), strict=True)
    ]
    assert answer(narrow).confidence == 70.0  # below 100 * 99 / 101
    heavy = [*narrow[:2], _band("c", 100 * ETH, 99 * ETH, 101 * ETH, w=5, confidence=99.5)]
    assert answer(heavy).confidence == pytest.approx(100 * 99 / 101)  # 99.5 asked, 98.0 stood for


def test_answer_weights_choose_the_price_and_the_widths() -> None:
    heavy = _band("a", 100 * ETH, 99 * ETH, 101 * ETH, w=5)
    light = [_band(k, 200 * ETH, 100 * ETH, 300 * ETH) for k in "bc"]
    result = answer([heavy, *light])
    assert (result.price, result.low, result.high) == (100 * ETH, 99 * ETH, 101 * ETH)
    result = answer([_band("a", 100 * ETH, 99 * ETH, 101 * ETH, w=0.5), *light])
    assert (result.price, result.low, result.high) == (200 * ETH, 100 * ETH, 300 * ETH)


def test_answer_two_equal_observers_meet_halfway() -> None:
    result = answer([_band("a", 100 * ETH, 95 * ETH, 105 * ETH), _band("b", 102 * ETH, 102 * ETH, 102 * ETH)])
    # 101 ETH, with widths midway between 5% and b's none, which counts 1%: 3% each side
    assert (result.price, result.low, result.high) == (101 * ETH, 9797 * ETH // 100, 10403 * ETH // 100)
    odd = answer([_band("a", 3, 3, 3), _band("b", 4, 4, 4)])
    # integer wei: the midpoint rounds down, and 3 wei -+ 1% rounds outwards to whole wei
    assert (odd.price, odd.low, odd.high) == (3, 2, 4)


def test_answer_band_cannot_be_stretched_by_an_observer() -> None:
    """A band counts at most +-50% of its price: one observer's claim of the whole range gives the answer
    a band of half to one and a half the price, and the confidence that band stands for."""
    result = answer([_band("a", 100 * ETH, 1, MAX_WEI, confidence=99.0)])
    assert (result.price, result.low, result.high) == (100 * ETH, 50 * ETH, 150 * ETH)
    assert result.confidence == pytest.approx(100 * 50 / 150)
    # the heaviest observer's wide band, among narrow ones, does not widen the answer either
    wide = _band("x", 100 * ETH, 1, MAX_WEI, w=1.5)
    narrow = [_obs(k, 100 * ETH) for k in "abc"]
    result = answer([wide, *narrow])
    assert (result.low, result.high) == (95 * ETH, 105 * ETH)


def test_answer_band_stops_at_the_largest_price_the_oracle_holds() -> None:
    top = _band("a", MAX_WEI, MAX_WEI // 2, MAX_WEI)
    near = _band("b", MAX_WEI - 2**90, MAX_WEI // 2, MAX_WEI)
    result = answer([top, near])
    assert result.price == MAX_WEI - 2**89  # midway, exact to the wei
    assert result.high == MAX_WEI  # the band's top would be past 2**96 - 1
    assert result.low <= result.price < result.high
    alone = answer([top])
    assert (alone.price, alone.high) == (MAX_WEI, MAX_WEI)


def test_answer_band_holds_the_price_from_a_hundredth_to_half_of_it_each_side() -> None:
    rng = random.Random(3)
    for _ in range(1000):
        observations = []
        for i in range(rng.randint(1, 8)):
            low, price, high = sorted(rng.randrange(1, 200 * ETH) for _ in range(3))
            at = NOW - timedelta(seconds=rng.randint(0, 3600))
            observations.append(
                Observation(str(i), price, low, high, rng.uniform(0, 100), rng.uniform(0.1, 100), at)
            )
        result = answer(observations)
        assert result.low <= result.price <= result.high
        assert result.price in {o.price for o in observations}  # float weights: never exactly half
        assert result.low >= result.price // 2 and result.high <= -(-3 * result.price // 2)
        assert result.low <= result.price * 99 // 100 and result.high >= -(-101 * result.price // 100)
        spans = [
            (
                min(max(Fraction(o.price - o.low, o.price), Fraction(1, 100)), Fraction(1, 2)),
                min(max(Fraction(o.high - o.price, o.price), Fraction(1, 100)), Fraction(1, 2)),
                o.weight,
            )
            for o in observations
        ]
        below = weighted_median([(b, w) for b, _, w in spans])
        above = weighted_median([(a, w) for _, a, w in spans])
        assert result.low == math.floor(result.price * (1 - below))
        assert result.high == math.ceil(result.price * (1 + above))
        stood_for = 100 * result.low / result.high
        assert result.confidence <= stood_for * (1 + 1e-12)
        median = weighted_median([(o.confidence, o.weight) for o in observations])
        assert result.confidence == pytest.approx(min(median, stood_for), rel=1e-12)
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


def _scored(sale: str, sold: datetime, made: datetime, ape: float) -> Scored:
    return Scored(made=made, sold=sold, sale=sale, ape=ape, covered=True)


def test_live_record_keeps_per_sale_the_latest_prediction_made_in_time() -> None:
    hour = timedelta(hours=1)
    day = NOW - timedelta(days=1)
    rows = [
        _scored("tx1", NOW, NOW - 2 * hour, 0.10),
        _scored("tx1", NOW, NOW - 1.5 * hour, 0.20),  # the latest made at least an hour before the sale
        _scored("tx1", NOW, NOW - 0.5 * hour, 0.01),  # too close to the sale to foretell it
        _scored("tx2", day, day - hour, 0.30),  # exactly the lead: counts
        _scored("tx2", day, day + timedelta(minutes=10), 0.0),  # made after the sale
        _scored("tx1", NOW - timedelta(days=2), NOW - timedelta(days=3), 0.40),  # the same source, sold again
        _scored("tx3", NOW, NOW - timedelta(minutes=10), 0.0),  # nothing in time
    ]
    expected = [rows[1], rows[3], rows[5]]  # newest sale first
    assert live_record(rows, 3600) == expected
    rng = random.Random(5)
    for _ in range(10):
        rng.shuffle(rows)
        assert live_record(rows, 3600) == expected
    assert live_record([], 3600) == []


def test_live_record_counts_a_sale_predicted_many_times_once() -> None:
    sold = NOW
    many = [_scored("tx", sold, sold - timedelta(hours=h), 0.5 / h) for h in range(1, 50)]
    (kept,) = live_record(many, 3600)
    assert kept.made == sold - timedelta(hours=1) and kept.ape == 0.5
    # two sales at one instant from two sources are two results
    assert len(live_record([*many, _scored("other", sold, sold - timedelta(hours=2), 0.1)], 3600)) == 2


def test_live_record_without_a_lead_still_drops_what_came_after_the_sale() -> None:
    at = _scored("tx", NOW, NOW, 0.0)
    after = _scored("tx", NOW, NOW + timedelta(seconds=1), 0.0)
    before = _scored("tx", NOW, NOW - timedelta(seconds=1), 0.2)
    assert live_record([before, at, after], 0) == [at]
    assert live_record([before, after], 0) == [before]
