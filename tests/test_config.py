import pytest
from cryptography.fernet import Fernet

from app.config import ConfigurationError, Settings, check_settings
from app.main import create_app


def test_documented_env_names_reach_their_sections(monkeypatch):
    monkeypatch.setenv("MONGODB_URL", "mongodb://db:27017")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("CHAIN_RPC_URL", "http://anvil:8545")
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL_S", "600")
    monkeypatch.setenv("ADMIN_WALLETS", "0xabc, 0xdef")
    monkeypatch.setenv("DATA_DIR", "/tmp/dv")
    settings = Settings(_env_file=None)
    assert settings.mongodb.url == "mongodb://db:27017"
    assert settings.redis.url == "redis://cache:6379/0"
    assert settings.s3.endpoint_url == "http://minio:9000"
    assert settings.chain.rpc_url == "http://anvil:8545"
    assert settings.auth.access_token_ttl_s == 600
    assert settings.admin_wallets == ["0xabc", "0xdef"]
    assert str(settings.data_dir) == "/tmp/dv"


def test_oracle_type_rules_override_the_built_in_ones_field_by_field(monkeypatch):
    monkeypatch.setenv("ORACLE_TYPE_RULES", '{"Art": {"deviation_bps": 300, "min_eth": 0.01}}')
    monkeypatch.setenv("ORACLE_ROUND_QUORUM", "3")
    oracle = Settings(_env_file=None).oracle
    assert oracle.round_quorum == 3
    art = oracle.rule("Art")
    assert (art.deviation_bps, art.min_eth, art.heartbeat_s) == (300, 0.01, 7 * 86400)  # the rest built in
    assert oracle.rule("Wine").deviation_bps == 300 and oracle.rule("Real Estate").min_eth == 1
    unknown = oracle.rule("Spaceship")
    assert (unknown.deviation_bps, unknown.heartbeat_s) == (
        oracle.publish_deviation_bps,
        oracle.publish_heartbeat_s,
    )


def test_development_without_urls_says_make_run_provides_them():
    with pytest.raises(ConfigurationError, match="MONGODB_URL, REDIS_URL, S3_ENDPOINT_URL not set"):
        check_settings(Settings(_env_file=None))


def test_production_refuses_default_secrets_and_embedded_services():
    settings = Settings(_env_file=None, app_env="production")
    with pytest.raises(ConfigurationError) as excinfo:
        check_settings(settings)
    message = str(excinfo.value)
    for name in (
        "MONGODB_URL",
        "REDIS_URL",
        "CHAIN_RPC_URL",
        "AUTH_JWT_SECRET",
        "S3_ACCESS_KEY_ID",
        "AUTH_DOMAIN",
    ):
        assert name in message


def test_production_with_real_services_and_secrets_starts():
    settings = Settings(
        _env_file=None,
        app_env="production",
        mongodb={"url": "mongodb://db:27017/?replicaSet=rs0"},
        redis={"url": "redis://cache:6379/0"},
        s3={"endpoint_url": None, "access_key_id": "AKIAREAL", "secret_access_key": "s" * 40},
        chain={
            "rpc_url": "https://rpc.example",
            "keystore_path": "/run/secrets/signer.json",
            "keystore_password": "p",
        },
        auth={"jwt_secret": "x" * 48, "domain": "market.example", "uri": "https://market.example"},
        oracle={"secrets_key": Fernet.generate_key().decode()},
    )
    check_settings(settings)  # AWS S3 needs no endpoint URL


def test_production_needs_the_signers_keystore_when_the_chain_is_on():
    settings = Settings(
        _env_file=None,
        app_env="production",
        chain={"rpc_url": "https://rpc.example"},
    )
    assert any("CHAIN_KEYSTORE_PATH" in problem for problem in settings.production_problems())


def test_structured_settings_come_from_json_env_values(monkeypatch):
    monkeypatch.setenv("AUTH_JWT_VERIFY_KEYS", '{"k0": "an-older-secret-still-accepted-for-a-while"}')
    monkeypatch.setenv("AUTH_RATE_LIMITS", '{"default": {"per_ip": 5, "per_principal": 10, "window_s": 30}}')
    settings = Settings(_env_file=None)
    assert settings.auth.jwt_verify_keys["k0"].get_secret_value().startswith("an-older")
    assert settings.auth.rate_limits["default"].per_ip == 5
    assert settings.auth.rate_limits["default"].window_s == 30


@pytest.mark.parametrize(
    "auth",
    [
        {"jwt_verify_keys": {"k0": "too-short"}},
        {"jwt_secret": "short"},
        {"jwt_kid": "not a valid kid!"},
    ],
    ids=["short verification key", "short signing secret", "bad kid"],
)
def test_a_bad_jwt_key_refuses_to_start_instead_of_failing_the_first_sign_in(auth):
    settings = Settings(
        _env_file=None,
        mongodb={"url": "mongodb://db"},
        redis={"url": "redis://cache"},
        s3={"endpoint_url": "http://s3"},
        auth=auth,
    )
    with pytest.raises(ConfigurationError, match="AUTH_JWT"):
        create_app(settings)
