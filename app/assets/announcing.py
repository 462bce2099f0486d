"""Moving an asset's announcements to the events outbox.

A change to an asset writes the events announcing it into the asset itself (`pendingEvents`), in the
same update as the change: nothing can make the one without the other. Right after, the writer moves
them to the events outbox (app/events, keyed, so moving again adds nothing) and takes them out of
the asset; the `assets.announce_pending` cron moves any that a crash left behind.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from app.assets import repository
from app.config import Settings
from app.events import service as events_service
from app.lib.timeutil import utcnow

log = structlog.get_logger(__name__)

SWEEP_AFTER = timedelta(seconds=30)  # a writer still in its request moves its own
SWEEP_BATCH = 500


async def announce_pending(clients, settings: Settings, token_id: int | None = None) -> int:
    """Move the announcements of this asset (or of every asset whose writer left them behind) to the
    outbox, and publish them; how many were moved."""
    before = None if token_id is not None else utcnow() - SWEEP_AFTER
    moved: list[str] = []
    for doc in await repository.with_pending_events(token_id, before, SWEEP_BATCH):
        events = doc.get("pendingEvents") or []
        await events_service.announce(events)
        keys = [event["_id"] for event in events]
        await repository.drop_pending_events(doc["tokenId"], keys)
        moved += keys
    if moved:
        await events_service.dispatch_soon(clients, settings, moved if token_id is not None else None)
    return len(moved)


async def announce_soon(clients, settings: Settings, token_id: int) -> None:
    """`announce_pending` for a writer that has just made its change: a failure leaves the announcements
    in the asset for the sweep, and fails nothing (the change is made)."""
    try:
        await announce_pending(clients, settings, token_id)
    except Exception as exc:
        log.warning("assets.announce_failed", token_id=token_id, error=str(exc)[:300])
