"""An RPC URL's secrets (API key in the path or query, credentials) never reach a log or an output."""

import pytest

from app.lib.chain import without_url_secrets


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "ClientResponseError: 401, message='Unauthorized', url='https://mainnet.infura.io/v3/SECRETKEY?x=1'",
            "ClientResponseError: 401, message='Unauthorized', url='https://mainnet.infura.io/…'",
        ),
        ("http://user:pw@127.0.0.1:8545/secret", "http://127.0.0.1:8545/…"),
        ("wss://node.example/ws/KEY", "wss://node.example/…"),
        ("no url here", "no url here"),
        # Found by review: a query right after the host, a scheme in capitals, a slash in a password,
        # and the other services' URLs.
        ("https://rpc.x.com?key=SECRET", "https://rpc.x.com/…"),
        ("HTTPS://rpc.x.com/v3/SECRET", "HTTPS://rpc.x.com/…"),
        ("https://user:pa/SECRET@rpc.x.com/v3", "https://rpc.x.com/…"),
        ("redis://:SECRET@cache:6379/0", "redis://cache:6379/…"),
        (
            "mongodb://app:SECRET@db1:27017,db2:27017/vault?authSource=admin",
            "mongodb://db1:27017,db2:27017/…",
        ),
        ("rediss://default:SECRET@cache.example:6380", "rediss://cache.example:6380/…"),
        ("https://api.x.com/v1/n?to=ops@corp.example&token=SECRET", "https://api.x.com/…"),
        ("https://host/p@SECRETKEY", "https://host/…"),
        ("redis://:pa'SECRET@cache:6379/0", "redis://cache:6379/…"),
        ("(https://u:SECRET@rpc.x:443), retry", "(https://rpc.x:443/…), retry"),
        ("url='https://node/SECRET', status=401", "url='https://node/…', status=401"),
    ],
)
def test_urls_keep_their_host_only(text, shown):
    assert without_url_secrets(text) == shown
    assert "SECRET" not in without_url_secrets(text).upper().replace("SECRETS", "")


def test_a_long_run_of_letters_and_dashes_is_scanned_in_linear_time():
    import time

    text = "https://h/ " + "a-" * 100_000
    started = time.perf_counter()
    assert without_url_secrets(text).startswith("https://h/… a-a-")
    assert time.perf_counter() - started < 1.0
