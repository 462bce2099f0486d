"""Closing rounds: after its window (and ROUND_GRACE, for requests in flight) one closer claims the
round (`closing`, a lease another takes over after a crash) and combines its members (the arithmetic is
`oracle.rounds`).

It keeps each operator's latest submission and brings in the platform's latest appraisal if the round
has none (younger than ORACLE_CARRY_MAX_AGE_S). Each observer is weighed by its live record (`record`);
an outlier is rejected; below the quorum the round is `no_quorum`; a failed gate makes it `rejected`
with a `rejectionReason`, a warning (`oracle.round.rejected`) and the `dynamicvault_oracle_rounds_refused`
gauge; otherwise it is `closed` with its decision (published, skipped, abstained, or superseded by a
later round of the token closed in the same pass). Every member's prediction gets its verdict, and
`round_verdicts.settle_stragglers` gives theirs to those a crash or a late join left pending.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import structlog
from bson import Decimal128
from prometheus_client import Gauge

from app.config import Settings
from app.lib.money import eth_to_wei, wei_string, wei_to_eth
from app.lib.timeutil import as_utc
from app.oracle import round_announcements, round_repository, round_verdicts
from app.oracle.round_documents import PLATFORM
from oracle import rounds as arithmetic

log = structlog.get_logger("oracle.rounds")
REFUSED = Gauge(
    "dynamicvault_oracle_rounds_refused",
    "Rounds closed in the last 24 hours with nothing to publish, by the gate (or quorum) that refused them",
    ["gate"],
)
REFUSERS = ("bounds", "jump", "sources", "confidence", "age", "quorum")
ROUND_GRACE = timedelta(seconds=5)
CLOSE_PER_PASS = 1000
READ_PER_SALE = 100  # a record reads at most this many predictions per sale it wants


# ---------------------------------------------------------------- closing


class Pass:
    """What one closing pass reads once: source health, weights, the tokens' last published prices."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self.settings = settings
        self.now = now
        self.unhealthy: set[str] = set()
        self.weights: dict[str | None, float] = {}
        self.last: dict[int, dict[str, Any]] = {}
        self.carried: dict[int, dict[str, Any]] = {}
        self.refused: dict[int, list[dict[str, Any]]] = {}

    async def load_health(self) -> None:
        oracle = self.settings.oracle
        for source in await round_repository.source_health():
            status = source.get("status") or {}
            interval = (source.get("configuration") or {}).get("refreshInterval") or 3600
            fetched = status.get("lastFetchAt")
            stale = fetched is None or (self.now - as_utc(fetched)).total_seconds() > (
                oracle.source_stale_intervals * interval
            )
            if stale or (status.get("errorCount") or 0) >= oracle.source_max_errors:
                self.unhealthy.add(source["name"])

    async def weight(self, operator: str | None) -> float:
        """1 / max(MdAPE, 1%) over the observer's latest scored predictions; a small default before."""
        if operator not in self.weights:
            oracle = self.settings.oracle
            found = await record(self.settings, operator, oracle.weight_window)
            self.weights[operator] = arithmetic.weight(
                [row.ape for row in found], oracle.weight_min_scored, oracle.new_operator_weight
            )
        return self.weights[operator]


async def record(settings: Settings, operator: str | None, limit: int) -> list[arithmetic.Scored]:
    """An observer's live record: its latest `limit` sales, each with its latest prediction that counted
    and was made ORACLE_WEIGHT_MIN_LEAD_S before it (`oracle.rounds.live_record`). Read until that many
    sales are found (an asset appraised daily has many predictions per sale), at most READ_PER_SALE
    predictions per sale wanted."""
    rows: list[arithmetic.Scored] = []
    sales: set[tuple[str, Any]] = set()
    async for doc in round_repository.scored(operator):
        outcome = doc["outcome"]
        sale = (outcome.get("source") or "", as_utc(outcome["soldAt"]))
        if len(sales) >= limit and sale not in sales:
            break
        sales.add(sale)
        rows.append(
            arithmetic.Scored(
                made=as_utc(doc["timestamp"]),
                sold=sale[1],
                sale=sale[0],
                ape=outcome["ape"],
                covered=bool(outcome["covered"]),
            )
        )
        if len(rows) >= limit * READ_PER_SALE:
            break
    return arithmetic.live_record(rows, settings.oracle.weight_min_lead_s)[:limit]


def _wei(value: Any) -> int:
    return int(wei_string(value) or 0)


async def _observation(state: Pass, doc: dict[str, Any]) -> arithmetic.Observation:
    price = _wei(doc["predictedPriceWei"])
    interval = doc.get("interval")
    low, high = (
        (_wei(interval["lowWei"]), _wei(interval["highWei"]))
        if interval
        else arithmetic.band_from_confidence(price, doc["confidenceScore"])
    )
    low, high = min(low, price), max(high, price)  # a stored band that misses its price holds it
    unhealthy = tuple(sorted(set(doc.get("dataSourcesUsed") or ()) & state.unhealthy))
    confidence = doc["confidenceScore"] * (
        state.settings.oracle.unhealthy_source_penalty if unhealthy else 1.0
    )
    return arithmetic.Observation(
        key=doc.get("operator") or PLATFORM,
        price=price,
        low=low,
        high=high,
        confidence=confidence,
        weight=await state.weight(doc.get("operator")),
        at=as_utc(doc["timestamp"]),
        unhealthy_sources=unhealthy,
    )


def _amounts(prefix: str, wei: int) -> dict[str, Any]:
    return {prefix: wei_to_eth(wei), f"{prefix}Wei": Decimal128(str(wei))}


def _participant(
    doc: dict[str, Any], seen: arithmetic.Observation, verdict: arithmetic.Verdict, carried: bool
):
    return {
        "predictionId": doc["_id"],
        "operator": seen.key,
        "priceWei": Decimal128(str(seen.price)),
        "lowWei": Decimal128(str(seen.low)),
        "highWei": Decimal128(str(seen.high)),
        "confidence": doc["confidenceScore"],
        "effectiveConfidence": seen.confidence,
        "weight": seen.weight,
        "timestamp": seen.at,
        "carried": carried,
        "unhealthySources": list(seen.unhealthy_sources),
        "status": "accepted" if verdict.accepted else "rejected",
        "rejectionReason": verdict.reason,
    }


def _published(last: dict[str, Any] | None) -> arithmetic.Published | None:
    if last is None or not last.get("answer"):
        return None
    answer = last["answer"]
    return arithmetic.Published(
        price=_wei(answer["priceWei"]),
        low=_wei(answer["lowWei"]),
        high=_wei(answer["highWei"]),
        at=as_utc(last["closesAt"]),
    )


def _rule(settings: Settings, asset_type: str | None) -> arithmetic.TypeRule:
    rule = settings.oracle.rule(asset_type)
    return arithmetic.TypeRule(
        min_wei=eth_to_wei(rule.min_eth),
        max_wei=min(eth_to_wei(rule.max_eth), arithmetic.MAX_WEI),
        deviation_bps=rule.deviation_bps,
        heartbeat_s=rule.heartbeat_s,
    )


async def _outcome(
    state: Pass,
    claimed: dict[str, Any],
    members: list[dict[str, Any]],
    carry: dict[str, Any] | None,
):
    """The changes that close one round, and the verdicts on its own members."""
    settings, oracle = state.settings, state.settings.oracle
    by_observer: dict[str, dict[str, Any]] = {}
    verdicts: list[round_verdicts.Verdict] = []
    for doc in sorted(members, key=lambda d: d["timestamp"]):
        earlier = by_observer.get(doc.get("operator") or PLATFORM)
        if earlier is not None:
            verdicts.append(
                (earlier["_id"], "rejected", "superseded: a later submission in the round", claimed["key"])
            )
        by_observer[doc.get("operator") or PLATFORM] = doc
    carried = carry if PLATFORM not in by_observer else None
    docs = [*by_observer.values(), *([carried] if carried else [])]
    for doc in [d for d in docs if _wei(d.get("predictedPriceWei")) <= 0]:  # nothing to weigh: left out
        docs.remove(doc)
        if doc is not carried:
            verdicts.append((doc["_id"], "rejected", "invalid: no positive price", claimed["key"]))
    observations = [await _observation(state, doc) for doc in docs]
    judged = arithmetic.judge(observations)
    participants = [
        _participant(doc, seen, verdict, doc is carried)
        for doc, seen, verdict in zip(docs, observations, judged, strict=True)
    ]
    for doc, verdict in zip(docs, judged, strict=True):
        if doc is not carried:
            verdicts.append(
                (doc["_id"], "accepted" if verdict.accepted else "rejected", verdict.reason, claimed["key"])
            )
    accepted = [seen for seen, verdict in zip(observations, judged, strict=True) if verdict.accepted]
    changes: dict[str, Any] = {"participants": participants, "closedAt": state.now}
    chosen = arithmetic.basis(accepted, PLATFORM)
    if len(accepted) < oracle.round_quorum or chosen is None:
        reason = (
            f"{len(accepted)} accepted participants of the {oracle.round_quorum} needed"
            if len(accepted) < oracle.round_quorum
            else f"operators alone need {arithmetic.MIN_PEERS} accepted participants, not {len(accepted)}"
        )
        return {**changes, "status": "no_quorum", "rejectedBy": "quorum", "rejectionReason": reason}, verdicts
    result = arithmetic.answer(chosen)
    changes["basis"] = "median" if len(chosen) >= arithmetic.MIN_PEERS else "platform"
    changes["answer"] = {
        **_amounts("price", result.price),
        **_amounts("low", result.low),
        **_amounts("high", result.high),
        "confidence": result.confidence,
        "observedAt": result.observed_at,
        "participants": result.participants,
    }
    last = _published(state.last.get(claimed["tokenId"]))
    rule = _rule(settings, claimed.get("assetType"))
    limits = arithmetic.GateLimits(
        jump_sigmas=oracle.gate_jump_sigmas,
        min_confidence=oracle.gate_min_confidence,
        max_age_s=oracle.gate_max_age_s,
        max_unhealthy_share=oracle.gate_max_unhealthy_share,
        jump_confirmations=oracle.gate_jump_confirmations,
    )
    confirmations = _confirmations(state.refused.get(claimed["tokenId"], ()), last, result)
    checks = arithmetic.gates(result, chosen, last, rule, limits, state.now, confirmations)
    changes["gates"] = [{"gate": g.gate, "passed": g.passed, "detail": g.detail} for g in checks]
    failed = next((g for g in checks if not g.passed), None)
    if failed is not None:
        log.warning(
            "oracle.round.rejected", round=claimed["key"], gate=failed.gate, detail=failed.detail, alert=True
        )
        reason = f"{failed.gate}: {failed.detail}"
        return {
            **changes,
            "status": "rejected",
            "rejectedBy": failed.gate,
            "rejectionReason": reason,
        }, verdicts
    decided = arithmetic.decide(result, last, rule, oracle.publish_min_confidence, state.now)
    decision = {"decision": decided.decision, "reason": decided.reason, "facts": decided.facts}
    return {**changes, "status": "closed", "decision": {**decision, "at": state.now}}, verdicts


def _confirmations(recent, last: arithmetic.Published | None, result: arithmetic.Answer) -> int:
    """The rounds since the last publication, newest first, refused by the jump gate for a price inside
    this answer's band: each the same move seen again. A round that closed with its answer ends the
    count; a round answered by a carried appraisal (an old one seen again, not a new observation) or
    with no answer neither counts nor ends it."""
    count = 0
    for doc in recent:
        if last is not None and as_utc(doc["closesAt"]) <= last.at:
            break
        if doc["status"] == "closed" or (doc.get("rejectedBy") not in (None, "jump", "quorum")):
            break
        carried = doc.get("basis") == "platform" and any(
            p.get("carried") for p in doc.get("participants") or () if p.get("operator") == PLATFORM
        )
        if doc.get("rejectedBy") != "jump" or carried:
            continue
        if not result.low <= _wei(doc["answer"]["priceWei"]) <= result.high:
            break
        count += 1
    return count


def _supersede(outcomes: dict[str, dict[str, Any]], claimed: list[dict[str, Any]]) -> None:
    """Of a token's rounds closed in one pass with an answer that passed its gates, only the latest is
    decided; the earlier ones are `superseded` (a later round that failed supersedes nothing)."""
    latest: dict[int, str] = {}
    for doc in sorted(claimed, key=lambda d: d["closesAt"]):
        if outcomes[doc["key"]]["status"] == "closed":
            latest[doc["tokenId"]] = doc["key"]
    for doc in claimed:
        changes = outcomes[doc["key"]]
        if changes["status"] == "closed" and latest[doc["tokenId"]] != doc["key"]:
            changes["decision"] = {
                "decision": "superseded",
                "reason": "a later round of the token",
                "facts": {},
                "at": changes["decision"]["at"],
            }


async def close_due(settings: Settings, now: datetime) -> dict[str, int]:
    """Close every round whose window has passed; counts by outcome."""
    keys = await round_repository.due_keys(now - ROUND_GRACE, now, CLOSE_PER_PASS)
    closer = uuid.uuid4().hex
    claimed = await round_repository.claim(keys, now - ROUND_GRACE, now, closer)
    counts: dict[str, int] = defaultdict(int, settled=await round_verdicts.settle_stragglers(settings, now))
    if not claimed:
        await round_announcements.announce_closed()  # what a crash after a close left
        return dict(counts)
    state = Pass(settings, now)
    await state.load_health()
    tokens = sorted({doc["tokenId"] for doc in claimed})
    state.last = await round_repository.last_published(tokens)
    oldest = min(as_utc(doc["closesAt"]) for doc in claimed)
    state.carried = await round_repository.latest_appraisals(
        tokens, oldest - timedelta(seconds=settings.oracle.carry_max_age_s), now
    )
    members = {
        m["_id"]: m for m in await round_repository.observations([i for d in claimed for i in d["members"]])
    }
    state.refused = await round_repository.recent_rounds(tokens, now - timedelta(days=7))
    outcomes, verdicts = {}, {}
    for doc in sorted(claimed, key=lambda d: d["closesAt"]):
        own = [members[i] for i in doc["members"] if i in members]
        carry = state.carried.get(doc["tokenId"])
        if carry is not None and not _carriable(settings, carry, doc):
            carry = None
        outcomes[doc["key"]], verdicts[doc["key"]] = await _outcome(state, doc, own, carry)
    _supersede(outcomes, claimed)
    # a crash between these two writes leaves the verdicts to settle_stragglers
    written = await round_repository.close(outcomes, closer)
    await round_repository.set_verdicts(
        [
            v
            for key in sorted(written)
            for v in round_verdicts.on_chain(settings, outcomes[key], verdicts[key])
        ]
    )
    await round_announcements.announce_closed()  # these rounds' `oracle_round_closed`, and any a crash left
    for key in written:
        counts[outcomes[key]["status"]] += 1
        if outcomes[key].get("decision"):
            counts[outcomes[key]["decision"]["decision"]] += 1
    log.info("oracle.rounds.closed", **counts)
    return dict(counts)


def _carriable(settings: Settings, appraisal: dict[str, Any], claimed: dict[str, Any]) -> bool:
    """The platform's appraisal can stand in a round it made before the round closed, if young enough."""
    made, closes = as_utc(appraisal["timestamp"]), as_utc(claimed["closesAt"])
    return closes - timedelta(seconds=settings.oracle.carry_max_age_s) <= made <= closes


async def refresh_metrics(now: datetime) -> dict[str, int]:
    """Set the refusal gauges (before a scrape of /metrics): an alert can fire on rounds refused."""
    found = await round_repository.refusals_since(now - timedelta(days=1))
    for gate in REFUSERS:
        REFUSED.labels(gate).set(found.get(gate, 0))
    return found
