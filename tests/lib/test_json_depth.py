"""Deep JSON is refused before a parser recurses into it, whatever the recursion limit."""

import sys

import pytest

from app.lib.json_depth import MAX_JSON_DEPTH, json_depth_ok
from app.oracle import parsing


@pytest.fixture
def raised_recursion_limit():
    """py_ecc (and Hypothesis) raise the limit: then the C parser overflows the stack, not the limit."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    yield
    sys.setrecursionlimit(before)


def test_a_deep_json_line_is_a_value_error_not_a_crash(raised_recursion_limit):
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(ValueError, match="nests too deeply"):
        parsing.loads(deep)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, True),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), False),
        ('["' + "[" * 10_000 + '"]', True),  # brackets inside a string do not nest
        ('{"a": "\\"' + "{" * 10_000 + '"}', True),
    ],
)
def test_the_depth_scan_counts_only_brackets_outside_strings(text, ok):
    assert json_depth_ok(text) is ok


async def test_a_deeply_nested_body_is_400_before_any_parser_sees_it(client):
    """It was a 500 (RecursionError in the body decoder), on routes open to anyone."""
    deep = b"[" * 200_000 + b"]" * 200_000
    response = await client.post(
        "/api/auth/verify", content=deep, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "json_too_deep"
    assert (await client.get("/api/system/health")).status_code == 200
