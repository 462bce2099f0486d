"""What the benchmarks share: settings for the embedded services they start, each in its own database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings


def bench_settings(services: dict[str, str | None], data_dir: Path, name: str, **sections: Any) -> Settings:
    """Settings for a benchmark named `name` over `services` (its own database and bucket), quiet logs;
    `sections` add to or replace a section (`auth={...}`, `chain={...}`)."""
    base: dict[str, Any] = {
        "mongodb": {"url": services["mongodb"], "database": f"dynamicvault_bench_{name}"},
        "redis": {"url": services["redis"]},
        "s3": {"endpoint_url": services["s3"], "bucket": f"dynamicvault-bench-{name}"},
    }
    if services.get("chain"):
        base["chain"] = {"rpc_url": services["chain"]}
    return Settings(
        _env_file=None, app_env="test", data_dir=data_dir, log_level="WARNING", **{**base, **sections}
    )
