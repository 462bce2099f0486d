"""Rounds: the predictions of one token's price combined into one answer, checked, and judged worth
publishing or not. Pure: no I/O; amounts are exact wei.

- **Aggregation** (Pyth's weighted median, Chainlink's 2f + 1): each observation is weighed by its
  operator's measured accuracy. One whose price lies outside the bands of more than half of the others
  (one vote each) is rejected, once at least three others can say so. The answer is the weighted median
  of the accepted prices, with the weighted median widths around it; below three observations, the
  platform's appraisal alone, which one or two operators cannot outvote. Bands count from +-1% to
  +-50% of their price, so no observer can stretch or pinch the answer's band alone.
- **Gates** a price must pass before it can be published: bounds for its asset type, the jump from the
  last published price in units of that price's sigma, the health of the data sources behind it, a minimum
  confidence, and a maximum age.
- **The publication rule**: publish when the move from the last published price exceeds both the type's
  deviation threshold and the half-width of the answer's own band (a move its uncertainty cannot
  explain), or when the type's heartbeat has elapsed; abstain below a confidence; otherwise skip.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

Z90 = 1.6448536269514722  # a 90% two-sided normal band is ±Z90·sigma
MAX_WEI = 2**96 - 1  # the PriceOracle stores amounts in 96 bits
MIN_MDAPE = 0.01  # an observer's weight is at most 1 / 1%
MAX_HALF_WIDTH = Fraction(1, 2)  # a band counts at most +-50% of its price
MIN_HALF_WIDTH = Fraction(1, 100)  # and at least +-1%
MIN_PEERS = 3  # observers it takes to outvote one (2f + 1, f = 1)


@dataclass(frozen=True)
class Observation:
    """One participant's price: exact wei, its band, its confidence (0-100) and its weight (> 0)."""

    key: str
    price: int
    low: int
    high: int
    confidence: float
    weight: float
    at: datetime
    unhealthy_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    key: str
    accepted: bool
    reason: str | None = None


@dataclass(frozen=True)
class Answer:
    price: int
    low: int
    high: int
    confidence: float
    observed_at: datetime  # the newest accepted observation
    participants: int


@dataclass(frozen=True)
class Published:
    """The last price published for a token."""

    price: int
    low: int
    high: int
    at: datetime


@dataclass(frozen=True)
class TypeRule:
    """What one asset type may be priced at, and how often and on what move it is published."""

    min_wei: int
    max_wei: int
    deviation_bps: int
    heartbeat_s: int


@dataclass(frozen=True)
class GateLimits:
    jump_sigmas: float  # k: the largest move from the last published price, in its sigma
    min_confidence: float
    max_age_s: int
    max_unhealthy_share: float  # of the answer's weight resting on unhealthy sources
    # A jump refused this many rounds in a row, each time to a price inside the new answer's band, is a
    # real move, not an error: the gate lets it through (without this, one refused move would hold the
    # old price forever).
    jump_confirmations: int = 3


@dataclass(frozen=True)
class Gate:
    gate: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    decision: str  # published | skipped | abstained
    reason: str
    facts: dict[str, float | int | None] = field(default_factory=dict)


def band_from_confidence(price: int, confidence: float) -> tuple[int, int]:
    """The band a confidence stands for when an observer gave none: the inverse of the model's score
    (confidence = 100 · low / high), symmetric in log price."""
    ratio = math.sqrt(min(max(confidence, 1.0), 100.0) / 100.0)
    # floats lose the last wei of a price past 2^53: the band is made to hold the price exactly
    return min(int(price * ratio), price), min(max(int(price / ratio), price), MAX_WEI)


@dataclass(frozen=True)
class Scored:
    """A prediction the live ledger scored against the sale that followed it."""

    made: datetime
    sold: datetime
    sale: str  # the sale's source (a transaction, or a data source's row)
    ape: float
    covered: bool


def live_record(scored: Sequence[Scored], min_lead_s: float) -> list[Scored]:
    """What an observer's record counts: per sale, its latest prediction made at least `min_lead_s` before
    it. Predictions made as a sale was happening foretell nothing, and a sale predicted many times is
    one result, not many."""
    latest: dict[tuple[str, datetime], Scored] = {}
    for row in scored:
        if (row.sold - row.made).total_seconds() < min_lead_s:
            continue
        key = (row.sale, row.sold)
        if key not in latest or row.made > latest[key].made:
            latest[key] = row
    return sorted(latest.values(), key=lambda row: row.sold, reverse=True)


def weight(apes: Sequence[float], min_scored: int, default: float) -> float:
    """An observer's weight from its live record: 1 / max(MdAPE, 1%) once it has `min_scored` scored
    predictions (a 5% MdAPE weighs 20), `default` before (a new observer has not earned a say)."""
    if len(apes) < min_scored:
        return default
    return 1 / max(statistics.median(apes), MIN_MDAPE)


def weighted_median(values: Sequence[tuple[Any, float]]) -> Any:
    """The weighted median: the first value the weight up to which passes half the total; where it is
    exactly half, the midpoint with the next value (two equal observers meet halfway, neither decides).
    Integers stay exact (the midpoint rounds down)."""
    ordered = sorted(values, key=lambda item: item[0])
    total = sum(weight for _, weight in ordered)
    reached = 0.0
    for index, (value, weight) in enumerate(ordered):
        reached += weight
        if math.isclose(reached * 2, total, rel_tol=1e-12) and index + 1 < len(ordered):
            following = ordered[index + 1][0]
            return (value + following) // 2 if isinstance(value, int) else (value + following) / 2
        if reached * 2 >= total:
            return value
    raise ValueError("no values")


def widths(observation: Observation) -> tuple[Fraction, Fraction]:
    """An observation's band below and above its price, relative to it, from MIN_HALF_WIDTH to
    MAX_HALF_WIDTH each: a wider band says nothing more, a narrower one claims a certainty no price has,
    and neither lets one observer stretch or pinch the round's band."""
    price = observation.price
    return (
        min(max(Fraction(price - observation.low, price), MIN_HALF_WIDTH), MAX_HALF_WIDTH),
        min(max(Fraction(observation.high - price, price), MIN_HALF_WIDTH), MAX_HALF_WIDTH),
    )


def _band(price: int, below: Fraction, above: Fraction) -> tuple[int, int]:
    return math.floor(price * (1 - below)), min(math.ceil(price * (1 + above)), MAX_WEI)


def judge(observations: Sequence[Observation]) -> list[Verdict]:
    """Each observation against the others' own bands (their `widths`), one vote each: rejected when more
    than half of them leave its price out. Weights make the answer, not the verdicts, so one heavy
    observer gone wrong cannot outvote the honest ones, and one liar's band is one vote among the rest.
    Fewer than MIN_PEERS others cannot reject an observation: with two, one liar would be half the vote."""
    verdicts = []
    for observation in observations:
        others = [o for o in observations if o.key != observation.key]
        if len(others) < MIN_PEERS:
            verdicts.append(Verdict(observation.key, True))
            continue
        bands = [_band(o.price, *widths(o)) for o in others]
        below = sum(1 for low, _ in bands if observation.price < low)
        above = sum(1 for _, high in bands if observation.price > high)
        if (below + above) * 2 <= len(others):
            verdicts.append(Verdict(observation.key, True))
        else:
            side = "above" if above > below else "below"
            reason = f"outside_band: {side} the bands of {below + above} of the {len(others)} others"
            verdicts.append(Verdict(observation.key, False, reason))
    return verdicts


def basis(accepted: Sequence[Observation], anchor: str) -> list[Observation] | None:
    """The observations an answer is made of: all of them from MIN_PEERS on; below that, the anchor's
    (the platform's appraisal) alone, since one or two operators cannot outvote it; None when the anchor
    is not there either (operators alone need MIN_PEERS)."""
    if len(accepted) >= MIN_PEERS:
        return list(accepted)
    return [o for o in accepted if o.key == anchor] or None


def answer(accepted: Sequence[Observation]) -> Answer:
    """The weighted medians of the prices, of the widths below and above (the band around the price) and
    of the confidences; the confidence is at most what the band's width stands for (100 * low / high)."""
    price = weighted_median([(o.price, o.weight) for o in accepted])
    spans = [(widths(o), o.weight) for o in accepted]
    low, high = _band(
        price,
        weighted_median([(below, weight) for (below, _), weight in spans]),
        weighted_median([(above, weight) for (_, above), weight in spans]),
    )
    confidence = float(weighted_median([(o.confidence, o.weight) for o in accepted]))
    return Answer(
        price=price,
        low=low,
        high=high,
        confidence=min(confidence, 100.0 * low / high),
        observed_at=max(o.at for o in accepted),
        participants=len(accepted),
    )


def sigma(published: Published) -> float:
    """The sigma a published 90% band stands for (one wei at least)."""
    return max((published.high - published.low) / (2 * Z90), 1.0)


def gates(
    result: Answer,
    accepted: Sequence[Observation],
    last: Published | None,
    rule: TypeRule,
    limits: GateLimits,
    now: datetime,
    confirmations: int = 0,
) -> list[Gate]:
    """Every gate with its verdict, in order; the answer may be published only when all pass."""
    bounds = f"{_eth(result.price)} ETH, within [{_eth(rule.min_wei)}, {_eth(rule.max_wei)}] ETH"
    checks = [Gate("bounds", rule.min_wei <= result.price <= rule.max_wei, bounds)]
    if last is None:
        checks.append(Gate("jump", True, "no published price"))
    else:
        moved = abs(result.price - last.price) / sigma(last)
        detail = f"{moved:.2f} sigma, at most {limits.jump_sigmas:g}"
        confirmed = confirmations >= limits.jump_confirmations
        if moved > limits.jump_sigmas and confirmed:
            detail += f"; confirmed by {confirmations} refused rounds in a row"
        checks.append(Gate("jump", moved <= limits.jump_sigmas or confirmed, detail))
    total = sum(o.weight for o in accepted)
    unhealthy = sum(o.weight for o in accepted if o.unhealthy_sources) / total
    names = sorted({name for o in accepted for name in o.unhealthy_sources})
    checks.append(
        Gate(
            "sources",
            unhealthy <= limits.max_unhealthy_share,
            f"{unhealthy:.0%} of the weight on unhealthy sources"
            + (f": {', '.join(names)}" if names else ""),
        )
    )
    checks.append(
        Gate(
            "confidence",
            result.confidence >= limits.min_confidence,
            f"{result.confidence:.1f} against a minimum of {limits.min_confidence:g}",
        )
    )
    age = (now - result.observed_at).total_seconds()
    checks.append(Gate("age", age <= limits.max_age_s, f"{age:.0f} s old, at most {limits.max_age_s} s"))
    return checks


def decide(
    result: Answer, last: Published | None, rule: TypeRule, min_confidence: float, now: datetime
) -> Decision:
    """Whether a gated answer is due for publication, and why."""
    if result.confidence < min_confidence:
        return Decision("abstained", "low_confidence", {"confidence": result.confidence})
    if last is None:
        return Decision("published", "first")
    move = abs(result.price - last.price)
    facts: dict[str, float | int | None] = {
        "moveBps": _bps(move, last.price),
        "deviationBps": rule.deviation_bps,
        "bandBps": _bps((result.high - result.low) // 2, last.price),
        "sinceLastS": int((now - last.at).total_seconds()),
        "heartbeatS": rule.heartbeat_s,
    }
    beyond_threshold = move * 10_000 > rule.deviation_bps * last.price
    beyond_band = move * 2 > result.high - result.low
    if beyond_threshold and beyond_band:
        return Decision("published", "deviation", facts)
    if (now - last.at).total_seconds() >= rule.heartbeat_s:
        return Decision("published", "heartbeat", facts)
    return Decision("skipped", "within_band" if beyond_threshold else "within_deviation", facts)


def _eth(wei: int) -> str:
    return f"{wei / 10**18:.6g}"


def _bps(amount: int, of: int) -> float | None:
    return round(amount * 10_000 / of, 2) if of else None
