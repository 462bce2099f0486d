"""Settings: one root object, nested sections, read from the environment and `.env`."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.config_oracle import DEV_ORACLE_SECRETS_KEY, OracleSettings

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
DEV_S3_KEY = "dev"
DEV_S3_SECRET = "dev-secret"


class MongoSettings(BaseModel):
    url: str | None = None
    database: str = "dynamicvault"
    server_selection_timeout_ms: int = 5_000
    max_time_ms: int = 5_000


class RedisSettings(BaseModel):
    url: str | None = None


class S3Settings(BaseModel):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    bucket: str = "dynamicvault-assets"
    access_key_id: str = DEV_S3_KEY
    secret_access_key: SecretStr = SecretStr(DEV_S3_SECRET)
    public_base_url: str | None = None
    # Put the public-read bucket policy at start-up (production refuses to start when the store
    # refuses it); false when a CDN with its own origin access serves public media.
    public_policy: bool = True


# Account 0 of anvil's and hardhat's well-known test mnemonic: the signer in development and tests only.
DEV_SIGNER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class ChainSettings(BaseModel):
    rpc_url: str | None = None
    chain_id: int = 31337
    confirmations: int = 2
    request_timeout_s: float = 5.0
    # The platform signer: an eth-account encrypted keystore (JSON) and its password. Without one, outside
    # production, the signer is the development key above.
    keystore_path: Path | None = None
    keystore_password: SecretStr | None = None
    # The AssetToken's tokenURI base (at most 80 characters): the API's public metadata route, to which
    # the token id is appended. Unset: AUTH_URI + /api/metadata/.
    metadata_base_uri: str | None = None
    # The Marketplace's fee (basis points, at most 1,000) and its recipient (unset: the signer).
    fee_bps: int = Field(default=250, ge=0, le=1000)
    fee_recipient: str | None = None
    # How long a deployment waits for its transaction's receipt.
    deploy_timeout_s: float = 120.0
    # The outbox (app/chain/outbox.py): a transaction not mined within `stuck_blocks` blocks is replaced
    # with both fees raised by at least `fee_bump_percent`; the tip is the median of the last
    # `fee_history_blocks` blocks' and at least `min_tip_wei`.
    stuck_blocks: int = Field(default=3, ge=1)
    fee_bump_percent: int = Field(default=20, ge=10, le=500)
    fee_history_blocks: int = Field(default=5, ge=1, le=1024)
    min_tip_wei: int = Field(default=1_000_000_000, ge=0)
    # Final at the node's `finalized` block when unset (or `confirmations` below the head on a node with
    # no such tag); a number: that many blocks below the head.
    finality_depth: int | None = Field(default=None, ge=0)
    # Ceilings: the fee per gas any transaction offers (its replacements stop there), the gas one may use
    # (an intent estimated above it fails before it takes a nonce), replacements per transaction, and
    # refusals by the node before a transaction is cancelled to free its nonce.
    max_fee_per_gas: int = Field(default=500 * 10**9, ge=1)
    max_gas: int = Field(default=15_000_000, ge=21_000)
    max_attempts: int = Field(default=10, ge=1, le=100)
    max_send_errors: int = Field(default=5, ge=1, le=100)
    # The indexer (app/chain/indexer.py): blocks per `eth_getLogs`, and how many recent blocks' hashes it
    # checks on every poll for a reorg.
    index_range: int = Field(default=2000, ge=1, le=100_000)
    reorg_depth: int = Field(default=12, ge=1, le=1000)


class RateLimitRule(BaseModel):
    """Requests allowed per window, counted separately per client IP and per principal."""

    per_ip: int = 600
    per_principal: int = 1200
    window_s: int = 60


def _default_rate_limits() -> dict[str, RateLimitRule]:
    # Handlers pick a group with opt={"rate_limit": "<group>"}; everything else is "default".
    return {
        "default": RateLimitRule(),
        "auth": RateLimitRule(per_ip=30, per_principal=30, window_s=60),
        # Probes and scrapers: generous, and readiness is cached, so a flood cannot reach the providers.
        "system": RateLimitRule(per_ip=300, per_principal=1200, window_s=60),
        # Stream connections opened (WebSocket handshakes and SSE requests): each may replay the log.
        "stream": RateLimitRule(per_ip=60, per_principal=120, window_s=60),
        # Refused credentials per IP, on every route (per_principal is unused: nobody was proven).
        "failed_credentials": RateLimitRule(per_ip=30, per_principal=30, window_s=60),
    }


class AuthSettings(BaseModel):
    domain: str = "localhost:8000"
    uri: str = "http://localhost:8000"
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_kid: str = "k1"
    jwt_issuer: str = "dynamicvault"
    jwt_audience: str = "dynamicvault-api"
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    nonce_ttl_s: int = 5 * 60
    cookie_secure: bool = True
    # Verification-only HS256 keys by kid, for a rotation: AUTH_JWT_VERIFY_KEYS='{"k0": "<old secret>"}'.
    jwt_verify_keys: dict[str, SecretStr] = Field(default_factory=dict)
    clock_skew_s: int = 60
    # How long the refresh token just rotated away still refreshes (two tabs refreshing at once).
    refresh_reuse_grace_s: float = Field(default=20, ge=0, le=60)
    max_api_keys_per_user: int = 25
    rate_limit_enabled: bool = True
    rate_limits: dict[str, RateLimitRule] = Field(default_factory=_default_rate_limits)

    @field_validator("rate_limits", mode="after")
    @classmethod
    def _keep_default_groups(cls, value: dict[str, RateLimitRule]) -> dict[str, RateLimitRule]:
        # Tuning one group must not drop the others (sign-in, failed credentials) to the default limits.
        return {**_default_rate_limits(), **value}

    def hs256_secrets(self) -> dict[str, str]:
        """Every HS256 secret by kid: the verification-only ones, and the signing key (which wins a clash)."""
        secrets_by_kid = {kid: secret.get_secret_value() for kid, secret in self.jwt_verify_keys.items()}
        secrets_by_kid[self.jwt_kid] = self.jwt_secret.get_secret_value()
        return secrets_by_kid


class WorkerSettings(BaseModel):
    max_jobs: int = 10
    # Jobs at once on the image worker (media.process, media.avatar): each may decode a large image.
    image_max_jobs: int = Field(default=2, ge=1)
    # Pixels the image worker holds decoded at once, over all its jobs: 50 Mpx, one image at the
    # asset cap, peaks near 400 MB. A job waits until its image fits; a larger image is refused.
    image_pixel_budget: int = Field(default=50_000_000, ge=1)
    # Deliveries at once on the webhook worker: each mostly waits on a receiver.
    webhook_max_jobs: int = Field(default=20, ge=1, le=1000)
    job_timeout_s: int = 300
    max_tries: int = 5
    job_completion_wait_s: int = 30


class BackupSettings(BaseModel):
    """The daily backup of every MongoDB collection to S3 (app/system/backups.py)."""

    # Complete backups kept: older ones are deleted once a new one has its manifest.
    keep: int = Field(default=7, ge=1, le=1000)
    # The UTC hour of the daily `system.backup` cron.
    hour: int = Field(default=2, ge=0, le=23)
    # How long one backup may run; a backup without its manifest older than this was abandoned (a
    # crash, a timeout) and is deleted by the next one that succeeds.
    timeout_s: int = Field(default=3600, ge=60, le=24 * 3600)


class OutboundSettings(BaseModel):
    """Requests the platform makes to URLs it was given (data sources, webhooks): app/lib/outbound.py."""

    # Lifts the refusal of private and loopback addresses (development and tests serve sources locally).
    # Link-local, cloud metadata, multicast and unspecified addresses stay refused whatever it says.
    allow_private: bool = False
    # Private networks allowed by name while the rest stay refused (a data host inside the VPC), as
    # comma-separated CIDRs, e.g. "10.20.0.0/16,fd00:1::/64".
    allowed_networks: str = ""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # The whole exchange, redirects and body included, so a server that trickles bytes is cut off.
    timeout_s: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_redirects: int = Field(default=5, ge=0, le=20)

    @field_validator("allowed_networks", mode="after")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for cidr in value.split(","):
            if cidr.strip():
                ipaddress.ip_network(cidr.strip(), strict=False)  # ValueError names the bad one
        return value


class StreamSettings(BaseModel):
    """The real-time stream (app/events): what is kept for resumption and what one connection may hold."""

    # Events kept in the Redis log that api processes read and clients resume from (`Last-Event-ID`,
    # `since`); an older resume point is told so.
    history: int = Field(default=10_000, ge=100, le=1_000_000)
    # Unsent events one connection holds before dropping its oldest (and saying how many it dropped).
    backlog: int = Field(default=500, ge=10, le=100_000)
    # Open stream connections (WebSocket and SSE together) per client address, over all api processes.
    max_connections_per_ip: int = Field(default=10, ge=1, le=10_000)
    max_topics: int = Field(default=20, ge=1, le=200)
    # A comment (SSE) or a registry refresh at this interval keeps idle connections and their slot alive.
    heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    # A connection whose send has not gone through for this long (its client stopped reading) is closed
    # (at least two heartbeats).
    send_deadline_s: float = Field(default=30.0, gt=0, le=600)


class WebhookSettings(BaseModel):
    """Webhook subscriptions and their delivery (app/webhooks)."""

    # One attempt's whole exchange; the receiver should answer at once and work later.
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    # Attempts per message: 30 s after the first failure, four times longer each time, at most 24 h
    # apart: 30 s, 2 m, 8 m, 32 m, 2 h 8 m, 8 h 32 m, 24 h, 24 h - about two and a half days.
    max_attempts: int = Field(default=9, ge=1, le=50)
    backoff_base_s: float = Field(default=30.0, gt=0)
    backoff_max_s: float = Field(default=24 * 3600.0, gt=0)
    # Consecutive failed attempts (over all its messages) after which a subscription is disabled.
    disable_after_failures: int = Field(default=20, ge=1, le=10_000)
    max_per_owner: int = Field(default=20, ge=1, le=1000)


class Settings(BaseSettings):
    """The whole configuration; every field has a working development default."""

    # A single "_" splits once, so the documented names work as they read:
    # MONGODB_URL -> mongodb.url, S3_ENDPOINT_URL -> s3.endpoint_url, AUTH_JWT_SECRET -> auth.jwt_secret.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    app_env: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".data")
    log_level: str = "INFO"
    log_json: bool = True
    admin_wallets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Bearer token for /metrics and readiness details; unset: open in development, closed in production.
    metrics_token: SecretStr | None = None
    audit_retention_days: int = Field(default=365, ge=1)

    mongodb: MongoSettings = MongoSettings()
    redis: RedisSettings = RedisSettings()
    s3: S3Settings = S3Settings()
    chain: ChainSettings = ChainSettings()
    auth: AuthSettings = AuthSettings()
    worker: WorkerSettings = WorkerSettings()
    oracle: OracleSettings = OracleSettings()
    outbound: OutboundSettings = OutboundSettings()
    backup: BackupSettings = BackupSettings()
    stream: StreamSettings = StreamSettings()
    webhook: WebhookSettings = WebhookSettings()

    @field_validator("admin_wallets", "cors_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    def production_problems(self) -> list[str]:
        """What makes this configuration unfit for production, by setting name."""
        problems = []
        for env_name, value in (
            ("MONGODB_URL", self.mongodb.url),
            ("REDIS_URL", self.redis.url),
            ("CHAIN_RPC_URL", self.chain.rpc_url),
        ):
            if not value:
                problems.append(f"{env_name} is not set (embedded services are for development only)")
        if self.chain.rpc_url and not (self.chain.keystore_path and self.chain.keystore_password):
            problems.append(
                "CHAIN_KEYSTORE_PATH and CHAIN_KEYSTORE_PASSWORD are not set (the platform signer)"
            )
        if self.auth.jwt_secret.get_secret_value() == DEV_JWT_SECRET:
            problems.append("AUTH_JWT_SECRET has its development default")
        elif len(self.auth.jwt_secret.get_secret_value()) < 32:
            problems.append("AUTH_JWT_SECRET is shorter than 32 characters")
        if (
            self.s3.access_key_id == DEV_S3_KEY
            or self.s3.secret_access_key.get_secret_value() == DEV_S3_SECRET
        ):
            problems.append("S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY have their development defaults")
        if DEV_ORACLE_SECRETS_KEY in self.oracle.secrets_keys():
            problems.append("ORACLE_SECRETS_KEY has its development default")
        if not self.auth.cookie_secure:
            problems.append("AUTH_COOKIE_SECURE must be true")
        if not self.s3.public_policy and not self.s3.public_base_url:
            problems.append("S3_PUBLIC_POLICY=false needs S3_PUBLIC_BASE_URL (the CDN serving public media)")
        defaults = AuthSettings()
        if self.auth.domain == defaults.domain or self.auth.uri == defaults.uri:
            problems.append("AUTH_DOMAIN / AUTH_URI still name localhost: set the site users sign in to")
        return problems

    def missing_urls(self) -> list[str]:
        """Service URLs that are unset and so need an embedded stand-in."""
        names = {"MONGODB_URL": self.mongodb.url, "REDIS_URL": self.redis.url}
        if not self.is_production:  # in production an unset endpoint means AWS S3 itself
            names["S3_ENDPOINT_URL"] = self.s3.endpoint_url
        return [name for name, value in names.items() if not value]


class ConfigurationError(RuntimeError):
    """The settings cannot run this process; the message names what is missing."""


def check_settings(settings: Settings) -> None:
    """Refuse to start in production with development defaults, and anywhere without service URLs."""
    if settings.is_production:
        problems = settings.production_problems()
        if problems:
            raise ConfigurationError("refusing to start in production: " + "; ".join(problems))
    missing = settings.missing_urls()
    if missing:
        raise ConfigurationError(
            f"{', '.join(missing)} not set: `make run` starts embedded services and sets them for you"
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
