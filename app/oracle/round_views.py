"""What the round routes show of the stored rounds: everything, for audit (participants are wallets and
prices, already public on the chain and in the prediction lists)."""

from __future__ import annotations

from typing import Any

import msgspec

from app.lib.money import wei_string, wei_to_eth
from app.oracle import round_schemas as schemas


def _participant(p: dict[str, Any]) -> schemas.ParticipantOut:
    price = int(wei_string(p["priceWei"]) or 0)
    return schemas.ParticipantOut(
        predictionId=str(p["predictionId"]),
        operator=p["operator"],
        price=wei_to_eth(price),
        priceWei=str(price),
        lowWei=wei_string(p["lowWei"]) or "0",
        highWei=wei_string(p["highWei"]) or "0",
        confidence=p["confidence"],
        effectiveConfidence=p["effectiveConfidence"],
        weight=p["weight"],
        timestamp=p["timestamp"],
        carried=p.get("carried", False),
        unhealthySources=p.get("unhealthySources") or [],
        status=p["status"],
        rejectionReason=p.get("rejectionReason"),
    )


def _answer(a: dict[str, Any] | None) -> schemas.AnswerOut | None:
    if not a:
        return None
    return schemas.AnswerOut(
        price=a["price"],
        priceWei=wei_string(a["priceWei"]) or "0",
        low=a["low"],
        lowWei=wei_string(a["lowWei"]) or "0",
        high=a["high"],
        highWei=wei_string(a["highWei"]) or "0",
        confidence=a["confidence"],
        observedAt=a["observedAt"],
        participants=a["participants"],
    )


def _publication(p: dict[str, Any] | None) -> schemas.PublicationOut | None:
    if not p:
        return None
    reference = p.get("onChainReference")
    return schemas.PublicationOut(
        status=p["status"],
        roundId=p["roundId"],
        onChainReference=msgspec.convert(reference, schemas.ChainReferenceOut) if reference else None,
        error=p.get("error"),
    )


def round_out(doc: dict[str, Any]) -> schemas.RoundOut:
    decision = doc.get("decision")
    return schemas.RoundOut(
        id=doc["key"],
        tokenId=doc["tokenId"],
        assetType=doc.get("assetType"),
        openedAt=doc["openedAt"],
        closesAt=doc["closesAt"],
        status=doc["status"],
        submissions=doc.get("submissions", 0),
        participants=[_participant(p) for p in doc.get("participants") or []],
        answer=_answer(doc.get("answer")),
        basis=doc.get("basis"),
        gates=[
            schemas.GateOut(gate=g["gate"], passed=g["passed"], detail=g["detail"])
            for g in doc.get("gates") or []
        ],
        rejectedBy=doc.get("rejectedBy"),
        rejectionReason=doc.get("rejectionReason"),
        decision=schemas.DecisionOut(
            decision=decision["decision"],
            reason=decision["reason"],
            facts=decision.get("facts") or {},
            at=decision["at"],
        )
        if decision
        else None,
        publication=_publication(doc.get("publication")),
        closedAt=doc.get("closedAt"),
    )
