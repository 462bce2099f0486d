"""`OPTIONS` answers with every method its path takes.

Litestar gives each path an automatic OPTIONS handler whose `Allow` lists the methods of the route it
was made for; when handlers of one path are registered in turns (a GET, then a POST), the route is
rebuilt but keeps the first OPTIONS handler, whose `Allow` then leaves out the later methods (an
`OPTIONS /api/assets` said `GET, OPTIONS`, without POST). `answer_options_for_every_method` points each
automatic handler at its route's final methods.
"""

from __future__ import annotations

from litestar import Litestar, MediaType, Response
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

_AUTOMATIC = "options_handler"  # the name Litestar gives the OPTIONS handlers it makes


def answer_options_for_every_method(app: Litestar) -> None:
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        if handler.handler_name != _AUTOMATIC:
            continue
        allow = ", ".join(sorted(route.methods))

        def options_handler(scope: object, allow: str = allow) -> Response:
            return Response(
                content=None,
                status_code=HTTP_204_NO_CONTENT,
                headers={"Allow": allow},
                media_type=MediaType.TEXT,
            )

        handler._fn = options_handler  # the handler stays Litestar's (guards, middleware): its answer is ours
