"""Consultation ids that may go in a URL, and the rule that a reason never does.

A reason for consulting personal data is free text, often personal data itself: in a URL it would land
in browser history and in every proxy's and server's access log. So the service refuses ``reason`` in a
query string (400, pointing to the ``X-Reason`` header or the page's form, which posts it), and a
consultation, once recorded, is named in URLs by an id instead.

With a session (the web page, or the API called from it) that id is opaque and bound to the session: the
audit entry id, masked and signed with an HMAC keyed by the session's secret CSRF token. Another user's
session, or the same user's after logging out, cannot read, forge or reuse it. The library still checks
the entry itself (whose, which search or reading, how old). Bearer-token clients have no session: they
name the consultation by its audit entry id, which only their own user can use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from fastapi import Request
from starlette.exceptions import HTTPException

from facematch.errors import InvalidArgument

__all__ = ["QUERY_REASON_REFUSED", "refuse_query_reason", "consultation_ref", "consultation_entry",
           "candidate_anchor"]

QUERY_REASON_REFUSED = ("a reason is never accepted in the URL's query string (access logs keep URLs): send it "
                        "in the X-Reason header (API) or state it in the page's form")


def refuse_query_reason(request: Request) -> None:
    """400 when the request carries ``reason`` in its query string (see the module docstring)."""
    if "reason" in request.query_params:
        raise HTTPException(400, QUERY_REASON_REFUSED)


def _key(request: Request) -> bytes | None:
    csrf = getattr(request.state, "csrf", None)
    return hashlib.sha256(b"facematch consultation id\0" + csrf.encode()).digest() if csrf else None


def consultation_ref(request: Request, entry: int) -> str | int:
    """How ``entry`` (a consultation's audit entry id) is named in URLs for this request's client."""
    key = _key(request)
    if key is None:
        return entry
    raw = entry.to_bytes(8, "big")
    masked = bytes(a ^ b for a, b in zip(raw, hmac.new(key, b"mask", "sha256").digest()))
    mac = hmac.new(key, b"entry" + raw, "sha256").digest()[:16]
    return base64.urlsafe_b64encode(masked + mac).decode().rstrip("=")


def consultation_entry(request: Request, ref: str | None) -> int | None:
    """The audit entry id a URL's consultation ``ref`` names (None when none is given); ``InvalidArgument``
    when it is not one made for this session (or, for a bearer token, not an entry id)."""
    if ref is None or not ref.strip():
        return None
    key = _key(request)
    if key is None:
        if ref.strip().isdigit():
            return int(ref)
        raise InvalidArgument("consultation: give the audit entry id of your consultation (its reply's 'consultation')")
    refused = InvalidArgument("this consultation id is not one of this session's (another user's, or from before "
                              "a log-out): state your reason again")
    try:
        data = base64.urlsafe_b64decode(ref.strip() + "=" * (-len(ref.strip()) % 4))
    except ValueError:
        raise refused from None
    if len(data) != 24:
        raise refused
    raw = bytes(a ^ b for a, b in zip(data[:8], hmac.new(key, b"mask", "sha256").digest()))
    if not hmac.compare_digest(data[8:], hmac.new(key, b"entry" + raw, "sha256").digest()[:16]):
        raise refused
    return int.from_bytes(raw, "big")


#: A candidate's anchor on the results page (``p<probe>-<list>-<rank>``), as the review queue links to it.
_ANCHOR = re.compile(r"p\d{1,6}-(custody|scene)-\d{1,6}")


def candidate_anchor(value: str | None) -> str | None:
    """``value`` when it is a candidate anchor, else None: the reason form carries the queue link's fragment
    through its POST, and only this token (never a URL: no open redirect) is added to the redirect."""
    value = (value or "").strip().lstrip("#")
    return value if _ANCHOR.fullmatch(value) else None
