"""Webhook endpoints: a signed-in user or a `webhooks:write` API key subscribes URLs to topics, and sees
how the deliveries to them fare. Each caller sees only their own subscriptions (an admin, everyone's)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.lib.deps import ClientsDep, ContextDep, SettingsDep
from app.lib.openapi import links, raises
from app.lib.params import CursorParam, LimitParam, one_of
from app.lib.security import current_principal, requires_permission
from app.webhooks import schemas, service
from app.webhooks.documents import DELIVERY_STATUSES

WebhookIdPath = Annotated[
    str,
    PathParameter(
        description="the id a webhook was created with",
        schema_extra={"pattern": service.WEBHOOK_ID_PATTERN},
    ),
]
StatusParam = Annotated[str | None, QueryParameter(schema_extra=one_of(DELIVERY_STATUSES))]
NOT_FOUND = {404: ["webhook_not_found"]}
LIST_ERRORS = {400: ["invalid_cursor", "invalid_limit"], 503: ["query_timeout"]}
WEBHOOK_LINKS = links(
    201,
    get_webhook={"webhookId": "$response.body#/id"},
    list_webhook_deliveries={"webhookId": "$response.body#/id"},
    delete_webhook={"webhookId": "$response.body#/id"},
)


class WebhookController(Controller):
    path = "/api/webhooks"
    tags = ["webhooks"]
    guards = [requires_permission(service.PERMISSION)]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        opt={
            **raises(
                {
                    400: ["invalid_topics", "invalid_url"],
                    409: ["too_many_webhooks", "url_not_allowed"],
                    503: ["webhook_creation_busy"],
                }
            ),
            **WEBHOOK_LINKS,
        },
    )
    async def create_webhook(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        data: JSONBody[schemas.WebhookCreate],
    ) -> Response[schemas.WebhookCreated]:
        """Subscribe a URL to topics: every event published to one of them is POSTed to it, signed per
        Standard Webhooks with the `secret` of this answer, which is never shown again. 409
        `url_not_allowed` for a host the platform does not deliver to (private, loopback, link-local,
        metadata, or not resolving); 409 `too_many_webhooks` past the limit per owner."""
        body = await service.create_webhook(
            clients.redis, settings, data, current_principal(request), context
        )
        return Response(body, status_code=HTTP_201_CREATED)

    @get("/", opt=raises(LIST_ERRORS))
    async def list_webhooks(
        self, request: Request, settings: SettingsDep, limit: LimitParam = None, cursor: CursorParam = None
    ) -> schemas.WebhookPage:
        """Your webhooks (an admin's: everyone's), newest first, with how their deliveries fare; keyset
        pages (`nextCursor`)."""
        return await service.list_webhooks(settings, current_principal(request), limit=limit, cursor=cursor)

    @get("/{webhookId:str}", opt=raises(NOT_FOUND))
    async def get_webhook(self, request: Request, webhookId: WebhookIdPath) -> schemas.WebhookOut:
        """One webhook: its status (`disabledReason`: `gone` after a 410, `consecutive_failures`), its
        consecutive failed attempts and its last error; never its secret."""
        return await service.get_webhook(webhookId, current_principal(request))

    @delete("/{webhookId:str}", status_code=HTTP_204_NO_CONTENT, opt=raises(NOT_FOUND))
    async def delete_webhook(self, request: Request, context: ContextDep, webhookId: WebhookIdPath) -> None:
        """Delete a webhook; what it had not yet been sent is skipped."""
        await service.delete_webhook(webhookId, current_principal(request), context)

    @get(
        "/{webhookId:str}/deliveries",
        opt=raises({**NOT_FOUND, 400: [*LIST_ERRORS[400], "invalid_status"], 503: ["query_timeout"]}),
    )
    async def list_webhook_deliveries(
        self,
        request: Request,
        settings: SettingsDep,
        webhookId: WebhookIdPath,
        status: StatusParam = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> schemas.DeliveryPage:
        """A webhook's deliveries of the last 30 days, newest first: status, attempts, the next one, the
        last answer's status code and error; keyset pages (`nextCursor`)."""
        return await service.list_deliveries(
            settings, webhookId, current_principal(request), status=status, limit=limit, cursor=cursor
        )
