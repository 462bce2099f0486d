"""Request and response bodies of the webhooks API (camelCase).

The constraints a body must meet are documented here and checked by the service with codes of their own
(`invalid_url`, `invalid_topics`), so a request that matches these schemas is never refused as invalid:
at most as a URL the platform does not deliver to (409 `url_not_allowed`). The secret comes out once,
in the answer to the creation, and never again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta

from app.config import StreamSettings
from app.lib.events import TOPIC_PATTERN
from app.lib.schemas import RequestBody, Schema, documented

URL_MAX_CHARS = 2048
# http(s), a host name or IPv4 address, a port that exists, a path or query of printable ASCII: no
# credentials before the host, no fragment.
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
URL_PATTERN = r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?" + _PORT + r"(?:[/?][!\"$-~]*)?$"
# The documented bound is the default of STREAM_MAX_TOPICS, which the service applies.
MAX_TOPICS = StreamSettings.model_fields["max_topics"].default
DESCRIPTION_MAX_CHARS = 500

Url = Annotated[
    str,
    documented(
        pattern=URL_PATTERN,
        maxLength=URL_MAX_CHARS,
        description="where events are POSTed: http(s), a host the platform may reach (never a private, "
        "loopback, link-local or metadata address unless OUTBOUND_ALLOW_PRIVATE), checked again at each "
        "delivery",
    ),
]
Topic = Annotated[str, documented(pattern=TOPIC_PATTERN)]
Topics = Annotated[
    list[Topic],
    documented(
        minItems=1,
        maxItems=MAX_TOPICS,
        description="`sales`, `listings`, `transfers`, `prices`, `oracle`, `media`, or `asset:{tokenId}`",
    ),
]
WebhookStatus = Literal["active", "disabled"]
DisabledReason = Literal["gone", "consecutive_failures"]
DeliveryStatus = Literal["pending", "sending", "delivered", "failed", "skipped"]


class WebhookCreate(RequestBody):
    url: Url
    topics: Topics
    description: Annotated[str, Meta(max_length=DESCRIPTION_MAX_CHARS)] = ""


class WebhookOut(Schema):
    id: str
    url: str
    topics: list[str]
    description: str
    owner: str
    status: WebhookStatus
    createdAt: datetime
    disabledReason: DisabledReason | None = None
    disabledAt: datetime | None = None
    consecutiveFailures: int = 0
    lastStatusCode: int | None = None
    lastError: str | None = None
    lastDeliveryAt: datetime | None = None
    lastSuccessAt: datetime | None = None


class WebhookCreated(WebhookOut, kw_only=True):
    secret: Annotated[
        str,
        Meta(description="`whsec_` and base64: verifies the `webhook-signature` header; shown only here"),
    ]


class WebhookPage(Schema):
    items: list[WebhookOut]
    nextCursor: str | None
    limit: int


class DeliveryOut(Schema):
    id: str
    webhookId: str
    eventId: str
    event: str
    topic: str
    status: DeliveryStatus
    attempts: int
    createdAt: datetime
    nextAttemptAt: datetime | None = None
    lastStatusCode: int | None = None
    lastError: str | None = None
    lastAttemptAt: datetime | None = None
    deliveredAt: datetime | None = None


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    nextCursor: str | None
    limit: int
