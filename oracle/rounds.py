"""Rounds: the predictions of one token's price combined into one answer, checked, and judged worth
publishing or not. Pure: no I/O; amounts are exact wei.

- **Aggregation** (Pyth's weighted median, Chainlink's quorum): each observation is weighed by its
  operator's measured accuracy. One whose price lies outside the others' combined band (the medians of
  their lows and highs) is rejected, once at least two others can say so. The answer is the
  weighted median of the accepted prices, lows and highs, so each bound is one an observer gave.
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

Z90 = 1.6448536269514722  # a 90% two-sided normal band is ±Z90·sigma
MAX_WEI = 2**96 - 1  # the PriceOracle stores amounts in 96 bits
MIN_MDAPE = 0.01  # an observer's weight is at most 1 / 1%


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
    band: tuple[int, int] | None = None  # the others' combined band it was held against


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


def weight(apes: Sequence[float], min_scored: int, default: float) -> float:
    """An observer's weight from its live record: 1 / max(MdAPE, 1%) once it has `min_scored` scored
    predictions (a 5% MdAPE weighs 20), `default` before (a new observer has not earned a say)."""
    if len(apes) < min_scored:
        return default
    return 1 / max(statistics.median(apes), MIN_MDAPE)


def weighted_median(values: Sequence[tuple[float, float]]) -> float:
    """The lower weighted median: the smallest value whose weight and all below it reach half the total."""
    ordered = sorted(values)
    total = sum(weight for _, weight in ordered)
    reached = 0.0
    for value, weight in ordered:
        reached += weight
        if reached * 2 >= total:
            return value
    raise ValueError("no values")


def _median_of(observations: Sequence[Observation], attribute: str) -> int:
    return int(weighted_median([(getattr(o, attribute), o.weight) for o in observations]))


def judge(observations: Sequence[Observation]) -> list[Verdict]:
    """Each observation against the others' combined band: the medians of their lows and highs, one vote
    each (weights make the answer, not the verdicts: one heavy observer gone wrong must not outvote every
    honest one out of the round); fewer than two others cannot outvote it."""
    verdicts = []
    for observation in observations:
        others = [o for o in observations if o.key != observation.key]
        if len(others) < 2:
            verdicts.append(Verdict(observation.key, True))
            continue
        band = (
            int(weighted_median([(o.low, 1.0) for o in others])),
            int(weighted_median([(o.high, 1.0) for o in others])),
        )
        if band[0] <= observation.price <= band[1]:
            verdicts.append(Verdict(observation.key, True, band=band))
        else:
            side = "above" if observation.price > band[1] else "below"
            reason = f"outside_band: {side} the others' combined band [{band[0]}, {band[1]}] wei"
            verdicts.append(Verdict(observation.key, False, reason, band))
    return verdicts


def answer(accepted: Sequence[Observation]) -> Answer:
    """The weighted medians of the accepted prices, lows, highs and confidences."""
    return Answer(
        price=_median_of(accepted, "price"),
        low=_median_of(accepted, "low"),
        high=_median_of(accepted, "high"),
        confidence=float(weighted_median([(o.confidence, o.weight) for o in accepted])),
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
) -> list[Gate]:
    """Every gate with its verdict, in order; the answer may be published only when all pass."""
    bounds = f"{_eth(result.price)} ETH, within [{_eth(rule.min_wei)}, {_eth(rule.max_wei)}] ETH"
    checks = [Gate("bounds", rule.min_wei <= result.price <= rule.max_wei, bounds)]
    if last is None:
        checks.append(Gate("jump", True, "no published price"))
    else:
        moved = abs(result.price - last.price) / sigma(last)
        checks.append(
            Gate("jump", moved <= limits.jump_sigmas, f"{moved:.2f} sigma, at most {limits.jump_sigmas:g}")
        )
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
