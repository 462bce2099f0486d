"""Typed handler dependencies, provided by name in `create_app()` (explicit, as Litestar 3 requires)."""

from __future__ import annotations

from litestar.di import NamedDependency

from app.config import Settings
from app.lib.clients import Clients

ClientsDep = NamedDependency[Clients]
SettingsDep = NamedDependency[Settings]
