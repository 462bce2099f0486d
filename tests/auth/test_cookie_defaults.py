from app.auth import controllers, sessions
from app.config import Settings


def test_the_refresh_cookie_is_secure_httponly_strict_and_scoped_by_default():
    pair = type("Pair", (), {"refresh_token": "opaque-token"})()
    cookie = controllers._refresh_cookie(Settings(_env_file=None), pair)
    header = cookie.to_header(header="").lower()
    assert cookie.secure is True
    assert "secure" in header and "httponly" in header and "samesite=strict" in header
    assert f"path={sessions.REFRESH_COOKIE_PATH}".lower() in header
    assert cookie.max_age == Settings(_env_file=None).auth.refresh_token_ttl_s
