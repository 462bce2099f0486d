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
    ],
)
def test_urls_keep_their_host_only(text, shown):
    assert without_url_secrets(text) == shown
    assert "SECRET" not in without_url_secrets(text).upper().replace("SECRETS", "")
