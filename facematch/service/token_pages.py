"""The /tokens page: a user's own API tokens (list, create, revoke), the same rules as ``/api/tokens``.

A new token's secret is shown once, in the reply to the form that made it (never in a URL, never stored),
with a warning to copy it now; that reply is not cached. Creating and revoking are audited by the library
(``token.create``, ``token.revoke``) and, being form posts, need the session's CSRF token. Each token shows
the day (UTC) it last authenticated a request ("never" when not used since schema 11 recorded it).
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from facematch.validation import check_text

__all__ = ["add_token_pages", "NO_STORE"]

#: Headers of a page that shows a secret: kept out of every cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def add_token_pages(app: FastAPI, state, render, page_user) -> None:
    def page(request: Request, user, status: int = 200, **extra):
        response = render(request, "tokens.html", user, status=status, tokens=state.fm.accounts.tokens(user), **extra)
        response.headers.update(NO_STORE)
        return response

    @app.get("/tokens", response_class=HTMLResponse, include_in_schema=False)
    def tokens_page(request: Request, user=Depends(page_user)):
        return page(request, user)

    @app.post("/tokens", include_in_schema=False)
    def create(request: Request, label: str = Form("api"), user=Depends(page_user)):
        label = check_text("label", label.strip() or "api", "name", state.settings.text_limits)
        token_id, secret = state.fm.accounts.create_token(user, label)
        return page(request, user, status=201, new={"id": token_id, "label": label, "token": secret})

    @app.post("/tokens/{token_id}/revoke", include_in_schema=False)
    def revoke(token_id: int, user=Depends(page_user)):
        state.fm.accounts.revoke_token(user, token_id)
        return RedirectResponse("/tokens", status_code=303)
