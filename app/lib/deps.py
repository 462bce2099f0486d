"""Typed handler dependencies, provided by name in `create_app()` (explicit, as Litestar 3 requires)."""

from __future__ import annotations

from litestar.di import NamedDependency

from app.config import Settings
from app.lib.clients import Clients
from app.lib.context import RequestContext

ClientsDep = NamedDependency[Clients]
SettingsDep = NamedDependency[Settings]
ContextDep = NamedDependency[RequestContext]  # who acts, from where: built per request, for the audit
