"""From a source's bytes to rows, one at a time: CSV, JSON Lines and JSON pages.

Pure: no I/O. Rows are yielded as they are read, never gathered into a list, so a refresh holds the body
and one batch of rows, not every row the body holds (a parsed row costs tens of times its bytes). A body
that cannot be read at all (no header, a JSON page that is not JSON) fails the fetch with a
`SourceError`; a line that cannot be read is a `Rejected` with its reason, and the lines around it go on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.lib.json_depth import json_depth_ok
from app.oracle.rows import Row, SourceError


@dataclass(frozen=True)
class Rejected:
    number: int  # the row's line (CSV, JSON Lines) or position (JSON pages), from 1
    reason: str


Item = Row | Rejected


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def loads(text: bytes | str) -> Any:
    """JSON with exact decimals (floats become `Decimal`) and without NaN or Infinity; ValueError for
    anything else, nesting too deep for the parser included."""
    if not json_depth_ok(text):
        raise ValueError("the JSON nests too deeply")
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
    except RecursionError as exc:
        raise ValueError("the JSON nests too deeply") from exc


def csv_rows(body: bytes) -> Iterator[Item]:
    """Rows of a CSV with a header line; a row with bad quoting or the wrong number of cells is rejected."""
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError("the file is empty", code="empty_file") from None
    except csv.Error as exc:
        raise SourceError("the header line is not valid CSV", code="invalid_header") from exc
    names = [name.strip() for name in header]
    if not any(names) or len(set(names)) != len(names):
        raise SourceError("the header must name every column once", code="invalid_header")
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield Rejected(reader.line_num, "malformed_csv")
            continue
        if not cells:
            continue  # a blank line
        if len(cells) != len(names):
            yield Rejected(reader.line_num, "wrong_column_count")
        elif any("\ufffd" in cell for cell in cells):
            yield Rejected(reader.line_num, "invalid_encoding")
        else:
            yield Row(
                reader.line_num, {name: cell.strip() or None for name, cell in zip(names, cells, strict=True)}
            )


def jsonl_rows(body: bytes) -> Iterator[Item]:
    """One JSON object per line; a line that is not one is rejected."""
    for number, line in enumerate(io.BytesIO(body), start=1):
        if not line.strip():
            continue
        try:
            value = loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError:
            yield Rejected(number, "invalid_encoding")
            continue
        except ValueError:
            yield Rejected(number, "malformed_json")
            continue
        yield Row(number, value) if isinstance(value, dict) else Rejected(number, "not_an_object")


def file_rows(body: bytes, fmt: str) -> Iterator[Item]:
    return csv_rows(body) if fmt == "csv" else jsonl_rows(body)


def at_path(document: Any, path: str | None) -> Any:
    """The value at a dotted path (`data.items`, `results.0`); the document itself for no path."""
    value = document
    for part in path.split(".") if path else ():
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def json_page(body: bytes, rows_path: str | None) -> tuple[list[Any], Any]:
    """The items of one JSON page (at `rows_path`) and the page itself (where its next URL is)."""
    try:
        document = loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError("a page is not valid JSON", code="malformed_json") from exc
    items = at_path(document, rows_path)
    if not isinstance(items, list):
        raise SourceError(f"a page has no list of rows at {rows_path or 'its top'}", code="rows_not_found")
    return items, document


def page_rows(items: list[Any], first_number: int) -> Iterator[Item]:
    """A page's items as rows, numbered on from `first_number`."""
    for offset, item in enumerate(items):
        number = first_number + offset
        yield Row(number, item) if isinstance(item, dict) else Rejected(number, "not_an_object")
