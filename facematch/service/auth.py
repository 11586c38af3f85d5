"""Who a request comes from (bearer token or session cookie), what they may do, and how often.

Session cookies are HttpOnly, SameSite=Strict; a request that changes something with a session must
also carry the session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf_token``). Bearer tokens
need no CSRF token: a browser never sends them by itself.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import defaultdict, deque

from fastapi import Request

from facematch.api import Facematch
from facematch.errors import AuthenticationFailed, PermissionDenied
from facematch.store.accounts import User

__all__ = ["SESSION_COOKIE", "RateLimited", "RateLimiter", "authenticate", "require", "check_csrf"]

SESSION_COOKIE = "fm_session"
_SAFE = ("GET", "HEAD", "OPTIONS")


class RateLimited(Exception):
    """Too many requests of one kind from one user within a minute."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many requests: try again in {retry_after} s")
        self.retry_after = retry_after


class RateLimiter:
    """A sliding one-minute window per key."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._seen: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            seen = self._seen[key]
            while seen and seen[0] < now - 60:
                seen.popleft()
            if len(seen) >= self.per_minute:
                raise RateLimited(int(seen[0] + 60 - now) + 1)
            seen.append(now)


def authenticate(fm: Facematch, request: Request) -> User:
    """The user of a bearer token or of a session cookie; ``AuthenticationFailed`` without either."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        request.state.csrf = None
        return fm.accounts.token_user(header[7:].strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise AuthenticationFailed("log in first (session cookie or Authorization: Bearer <token>)")
    user, csrf = fm.accounts.session(cookie)
    request.state.csrf = csrf
    return user


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request made with a session cookie but without its CSRF token."""
    expected = getattr(request.state, "csrf", None)
    if request.method in _SAFE or expected is None:
        return
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            ("multipart/form-data", "application/x-www-form-urlencoded")):
        given = (await request.form()).get("csrf_token")
    if not given or not hmac.compare_digest(str(given), expected):
        raise PermissionDenied("missing or wrong CSRF token: reload the page and try again")


def require(user: User, role: str) -> None:
    if not user.has(role):
        raise PermissionDenied(f"this needs the {role} role; {user.username} holds {', '.join(sorted(user.roles))}")
