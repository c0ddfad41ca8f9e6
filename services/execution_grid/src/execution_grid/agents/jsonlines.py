"""Defensive pieces shared by the adapters' readers: JSON-lines parsing, typed field access, summary clipping.

Agent CLIs change their output between releases and interleave banners, warnings and stack traces with their
machine-readable lines, so every accessor here answers a neutral value instead of raising on a missing field
or a field of the wrong type.
"""

import json
import math
from collections.abc import Mapping

type JsonObject = Mapping[str, object]

SUMMARY_MAX_CHARS = 4000
_ELLIPSIS = "…"
_EMPTY: JsonObject = {}


def parse_object(line: str) -> JsonObject | None:
    """The JSON object on this line, or None when the line is anything else (text, an array, broken JSON)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: a pathologically nested line must not take the supervisor down.
        return None
    return value if isinstance(value, dict) else None


def object_at(source: JsonObject, key: str) -> JsonObject:
    value = source.get(key)
    return value if isinstance(value, dict) else _EMPTY


def list_at(source: JsonObject, key: str) -> list[object]:
    value = source.get(key)
    return value if isinstance(value, list) else []


def text_at(source: JsonObject, key: str) -> str:
    value = source.get(key)
    return value if isinstance(value, str) else ""


def flag_at(source: JsonObject, key: str) -> bool | None:
    value = source.get(key)
    return value if isinstance(value, bool) else None


def count_at(source: JsonObject, key: str) -> int | None:
    """A non-negative whole number, or None (absent, negative, not a number; ``True`` is not a count)."""
    value = source.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    return None


def amount_at(source: JsonObject, key: str) -> float | None:
    """A non-negative finite number (money), or None."""
    value = source.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    amount = float(value)
    return amount if math.isfinite(amount) and amount >= 0 else None


def clip_head(text: str) -> str:
    """The start of ``text`` within the summary limit: a final message leads with its conclusion."""
    text = text.strip()
    if len(text) <= SUMMARY_MAX_CHARS:
        return text
    return text[: SUMMARY_MAX_CHARS - len(_ELLIPSIS)] + _ELLIPSIS


def clip_tail(text: str) -> str:
    """The end of ``text`` within the summary limit: in a plain transcript the latest lines matter most."""
    text = text.strip()
    if len(text) <= SUMMARY_MAX_CHARS:
        return text
    return _ELLIPSIS + text[len(text) - SUMMARY_MAX_CHARS + len(_ELLIPSIS) :]


def format_amount(value: float) -> str:
    """A money amount as a plain decimal command-line argument (``2.5``, ``10``), never in exponent form."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
