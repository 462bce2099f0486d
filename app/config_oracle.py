"""The oracle's settings (ORACLE_*): sources, training, rounds, gates and the publication rule."""

from __future__ import annotations

import base64
import binascii
import os

from pydantic import BaseModel, Field, SecretStr, field_validator

# A Fernet key (urlsafe base64 of 32 bytes) for development and tests only; production refuses it.
DEV_ORACLE_SECRETS_KEY = "ZGV2LW9ubHktb3JhY2xlLXNlY3JldHMta2V5LTAwMDA="


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (ValueError, binascii.Error):
        return False


class TypeRule(BaseModel):
    """How one asset type is priced on-chain: plausible bounds (ETH), and the move (basis points) or the
    time (seconds) after which a new price is due. A field left out takes the built-in default."""

    min_eth: float | None = Field(default=None, gt=0)
    max_eth: float | None = Field(default=None, gt=0)
    deviation_bps: int | None = Field(default=None, ge=1, le=10_000)
    heartbeat_s: int | None = Field(default=None, ge=60)


# Built-in rules: slow markets (real estate, wine) move little and are published at least weekly; the
# bounds only refuse what no such asset costs (at any plausible ETH price).
TYPE_RULES: dict[str, TypeRule] = {
    "Real Estate": TypeRule(min_eth=1, max_eth=1e6, deviation_bps=200, heartbeat_s=7 * 86400),
    "Art": TypeRule(min_eth=1e-3, max_eth=1e6, deviation_bps=500, heartbeat_s=7 * 86400),
    "Collectible": TypeRule(min_eth=1e-4, max_eth=1e5, deviation_bps=300, heartbeat_s=3 * 86400),
    "Jewelry": TypeRule(min_eth=1e-3, max_eth=1e5, deviation_bps=300, heartbeat_s=7 * 86400),
    "Watch": TypeRule(min_eth=1e-2, max_eth=1e4, deviation_bps=200, heartbeat_s=3 * 86400),
    "Wine": TypeRule(min_eth=1e-3, max_eth=1e4, deviation_bps=300, heartbeat_s=7 * 86400),
    "Vehicle": TypeRule(min_eth=1e-2, max_eth=1e5, deviation_bps=200, heartbeat_s=3 * 86400),
    "Memorabilia": TypeRule(min_eth=1e-4, max_eth=1e5, deviation_bps=500, heartbeat_s=7 * 86400),
    "Luxury Goods": TypeRule(min_eth=1e-3, max_eth=1e5, deviation_bps=300, heartbeat_s=7 * 86400),
}
DEFAULT_MIN_ETH, DEFAULT_MAX_ETH = 1e-9, 1e9


class OracleSettings(BaseModel):
    # Fernet keys that encrypt data sources' credentials at rest, comma-separated: the first encrypts,
    # every one decrypts (a rotation adds the new key in front, then drops the old one once re-saved).
    secrets_key: SecretStr = SecretStr(DEV_ORACLE_SECRETS_KEY)
    # Reliability is the share of successful fetches among a source's last `fetch_history` attempts.
    fetch_history: int = Field(default=20, ge=1, le=200)
    # Sources the refresh cron queues per run, the most overdue first.
    refresh_batch: int = Field(default=50, ge=1, le=1000)
    # Rows (accepted and rejected) one fetch reads; past it the fetch stops as `too_many_rows`, keeping
    # the rows it wrote, so one source cannot hold a worker or the database for long.
    max_rows_per_fetch: int = Field(default=200_000, ge=1, le=10_000_000)
    # Training: an asset type with fewer sales than this gets no model (and says so); at most this many
    # of the latest sales are read; the cron trains a new version at this UTC hour each day.
    min_training_rows: int = Field(default=40, ge=10, le=100_000)
    max_training_rows: int = Field(default=1_000_000, ge=100, le=10_000_000)
    train_hour: int = Field(default=3, ge=0, le=23)
    # Boosters averaged into a type's point below 10,000 sales (oracle/model.py): fewer train faster,
    # at some accuracy (one gives the single booster, still blended with the ridge).
    point_bag: int = Field(default=10, ge=1, le=50)
    # How long one training or appraisal job may run (other jobs have WORKER_JOB_TIMEOUT_S).
    job_timeout_s: int = Field(default=3600, ge=60, le=24 * 3600)
    # Appraisals read, predict and write assets this many at a time.
    appraisal_batch: int = Field(default=2000, ge=10, le=50_000)
    # OpenMP threads one training or prediction may use. Its threads spin while they wait for each
    # other, so more threads than free cores makes boosting many times slower, not faster: leave a
    # core to the worker's other jobs.
    model_threads: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 1) - 1), ge=1, le=256)
    # The publication rule (README "The publication rule"): the deviation and heartbeat of a type with no
    # rule in `type_rules`; abstention below `publish_min_confidence`; rounds per `set_prices`.
    publish_deviation_bps: int = Field(default=100, ge=1, le=10_000)
    publish_heartbeat_s: int = Field(default=24 * 3600, ge=60)
    publish_min_confidence: float = Field(default=50.0, ge=0, le=100)
    publish_batch: int = Field(default=100, ge=1, le=200)
    # Per asset type, over TYPE_RULES (a type in neither takes publish_deviation_bps and
    # publish_heartbeat_s), as JSON: ORACLE_TYPE_RULES='{"Art": {"deviation_bps": 300}}'.
    type_rules: dict[str, TypeRule] = Field(default_factory=dict)
    # Rounds (README "Rounds"): the window, the accepted participants an answer needs, an operator's
    # submissions per token and round, the age of the platform's appraisal that stands in for it.
    round_window_s: int = Field(default=300, ge=1, le=24 * 3600)
    round_quorum: int = Field(default=1, ge=1, le=100)
    max_submissions_per_round: int = Field(default=5, ge=1, le=1000)  # per operator and token
    carry_max_age_s: int = Field(default=26 * 3600, ge=60)
    # Weights: 1 / max(MdAPE, 1%) of the last `weight_window` predictions of a record (README "Rounds").
    new_operator_weight: float = Field(default=1.0, gt=0, le=100)
    weight_min_scored: int = Field(default=5, ge=1)
    weight_window: int = Field(default=200, ge=1, le=10_000)
    weight_min_lead_s: int = Field(default=3600, ge=0)
    # Gates (README "Gates"), and when a data source is unhealthy.
    gate_jump_sigmas: float = Field(default=8.0, gt=0)
    gate_jump_confirmations: int = Field(default=3, ge=1, le=100)
    gate_min_confidence: float = Field(default=10.0, ge=0, le=100)
    gate_max_age_s: int = Field(default=26 * 3600, ge=1)
    gate_max_unhealthy_share: float = Field(default=0.5, ge=0, le=1)
    source_max_errors: int = Field(default=3, ge=1)
    source_stale_intervals: float = Field(default=3.0, gt=0)
    unhealthy_source_penalty: float = Field(default=0.5, ge=0, le=1)

    @field_validator("secrets_key", mode="after")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        if not keys or not all(_is_fernet_key(k) for k in keys):
            raise ValueError(
                "ORACLE_SECRETS_KEY must be Fernet keys (urlsafe base64 of 32 bytes), comma-separated"
            )
        return value

    def secrets_keys(self) -> list[str]:
        return [k.strip() for k in self.secrets_key.get_secret_value().split(",") if k.strip()]

    def rule(self, asset_type: str | None) -> TypeRule:
        """The rule of an asset type: its settings over the built-in one, over the global defaults."""
        found = {
            "min_eth": DEFAULT_MIN_ETH,
            "max_eth": DEFAULT_MAX_ETH,
            "deviation_bps": self.publish_deviation_bps,
            "heartbeat_s": self.publish_heartbeat_s,
        }
        for layer in (TYPE_RULES.get(asset_type or ""), self.type_rules.get(asset_type or "")):
            if layer is not None:
                found.update(layer.model_dump(exclude_none=True))
        return TypeRule(**found)
