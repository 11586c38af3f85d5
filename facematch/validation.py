"""Checks on what people type: free text (ids, names, notes, reasons) and integers, in one place.

Free text ends up in the catalogue, the audit log and on investigators' terminals. A control character
(C0 or C1, ESC and CR/LF included; tab too), a Unicode line or paragraph separator or a bidirectional
override could rewrite a terminal line or forge an audit line, so none is accepted in any field: notes
and reasons are one line of text. Lengths are bounded by ``Settings.text_limits``. Integers are bounded by
SQLite's 64-bit range so an oversized id is a clear error, not an OverflowError from the database.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

from facematch.errors import InvalidArgument
from facematch.settings import MAX_INT, TextLimits

__all__ = ["TEXT_KINDS", "forbidden_character", "check_text", "check_optional_text", "check_int", "check_date"]

#: Kinds of free text and the ``TextLimits`` field that bounds each.
TEXT_KINDS = {"id": "ident", "name": "name", "note": "note"}

#: Invisible characters that reorder or break lines when displayed (Unicode bidi controls, separators).
_FORMAT_CONTROLS = frozenset("\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def forbidden_character(text: str) -> str | None:
    """The first character of ``text`` no field accepts (control, separator, bidi override), or None."""
    for char in text:
        if unicodedata.category(char) == "Cc" or char in _FORMAT_CONTROLS:
            return char
    return None


def check_text(field: str, value, kind: str, limits: TextLimits | None = None) -> str:
    """``value`` if it is acceptable free text of ``kind`` ("id", "name" or "note"), else ``InvalidArgument``.

    The error names ``field`` (e.g. "subject id") and the offending character as a code point, never the
    character itself, so the message is safe to print. Leading/trailing spaces are refused in ids and
    names (two ids that look the same must be the same).
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be text, got {type(value).__name__}")
    limit = getattr(limits or TextLimits(), TEXT_KINDS[kind])
    if not value.strip():
        raise InvalidArgument(f"{field} is empty")
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value)} characters long; the limit is {limit}")
    bad = forbidden_character(value)
    if bad is not None:
        raise InvalidArgument(f"{field} contains a control character (U+{ord(bad):04X}); "
                              "control characters, line breaks and bidi overrides are not accepted")
    if kind != "note" and value != value.strip():
        raise InvalidArgument(f"{field} has leading or trailing spaces")
    return value


def check_optional_text(field: str, value, kind: str, limits: TextLimits | None = None) -> str | None:
    """As :func:`check_text`, but None passes through."""
    return None if value is None else check_text(field, value, kind, limits)


def check_int(field: str, value, *, minimum: int = 1) -> int:
    """``value`` if it is an integer in ``minimum..2**63-1``, else ``InvalidArgument`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidArgument(f"{field} must be at least {minimum}, got {value}")
    if value > MAX_INT:
        raise InvalidArgument(f"{field} must be at most {MAX_INT} (2**63-1), got {value}")
    return value


def check_date(field: str, value: str | None) -> str | None:
    """An ISO 8601 date or date-time (``2024-01-02``, ``2024-01-02T10:00:00``), or None; else ``InvalidArgument``."""
    if value is None:
        return None
    try:
        dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{field} is not an ISO 8601 date (YYYY-MM-DD), got {value[:40]!r}") from None
    return value
