"""How deep a JSON text nests, found without parsing it.

json.loads (and the C scanner under it) recurses once per level; a dependency that raises the
recursion limit (py_ecc sets 100000, Hypothesis raises it too) turns a deeply nested document into a
segfault rather than a RecursionError. Every JSON text from outside is scanned first, linearly.
"""

from __future__ import annotations

import re

MAX_JSON_DEPTH = 256
# The closing quote is optional: an unterminated string then runs to the end in one match, where a
# required quote made the engine retry from every later quote (quadratic on `"\"\"\"...`).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_ok(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether UTF-8 JSON nests at most `limit` levels (strings, and the brackets in them, skipped).

    Valid UTF-8 never has a quote, backslash or bracket byte inside another character, so the scan of
    the bytes sees the very brackets and strings that a parser sees in the text.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    if data.count(b"[") + data.count(b"{") <= limit:
        return True
    depth = 0
    for byte in _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return False
    return True
