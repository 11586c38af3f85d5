"""Agency administration over HTTP (/api/admin/...): an admin manages their own agency's users, tokens and shares.

Thin routes (and the /admin page: users, their API tokens and sharing agreements) over ``facematch.store.administration.AgencyAdmin``: the role check here, the agency scoping
(another agency's user, token, collection or agreement answers 404) and the audit there. Every change
carries a ``reason``, audited with the admin's name. Agencies are created with the command line only.
"""

from __future__ import annotations

from fastapi import Body, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from facematch.errors import NotFound
from facematch.service.auth import require
from facematch.store.accounts import ROLES, User
from facematch.store.administration import AgencyAdmin
from facematch.validation import check_text

__all__ = ["add_admin_routes", "add_admin_pages", "agency_admin", "NewUser", "NewShare"]


class NewUser(BaseModel):
    username: str
    password: str
    roles: list[str]
    reason: str
    agency: str | None = None  # only your own agency (or omitted)


class Roles(BaseModel):
    roles: list[str]
    reason: str


class Because(BaseModel):
    reason: str


class NewToken(BaseModel):
    label: str = "api"
    reason: str


class NewShare(BaseModel):
    collection: str
    agency: str
    reason: str
    until: str | None = None


def agency_admin(state, user: User, reason: str | None = None) -> AgencyAdmin:
    """The admin role checked (403 without it), the reason checked as free text when given."""
    require(user, "admin")
    if reason is not None:
        check_text("reason", reason, "note", state.settings.text_limits)
    return AgencyAdmin(state.fm.accounts, user)


def add_admin_routes(app: FastAPI, state, current) -> None:
    @app.get("/api/admin/users", tags=["admin"])
    def users(user: User = Depends(current)):
        """The users of your agency, disabled ones included."""
        return agency_admin(state, user).users()

    @app.post("/api/admin/users", tags=["admin"], status_code=201)
    def add_user(body: NewUser, user: User = Depends(current)):
        """Add a user to your agency (another agency answers 404)."""
        admin = agency_admin(state, user, body.reason)
        if body.agency not in (None, "", user.agency):
            raise NotFound(f"no agency {body.agency!r} that you administer")
        made = admin.add_user(check_text("username", body.username, "name", state.settings.text_limits),
                              body.password, body.roles, reason=body.reason)
        return {"user": made.login, "recorded_as": made.username, "agency": made.agency, "roles": sorted(made.roles)}

    @app.put("/api/admin/users/{username}/roles", tags=["admin"])
    def set_roles(username: str, body: Roles, user: User = Depends(current)):
        """Replace the roles of a user of your agency (it keeps at least one active admin)."""
        return {"user": username,
                "roles": agency_admin(state, user, body.reason).set_roles(username, body.roles, reason=body.reason)}

    @app.post("/api/admin/users/{username}/disable", tags=["admin"])
    def disable(username: str, body: Because, user: User = Depends(current)):
        """Disable a user of your agency: sessions end and API tokens are revoked at once."""
        return agency_admin(state, user, body.reason).set_active(username, False, reason=body.reason)

    @app.post("/api/admin/users/{username}/enable", tags=["admin"])
    def enable(username: str, body: Because, user: User = Depends(current)):
        return agency_admin(state, user, body.reason).set_active(username, True, reason=body.reason)

    @app.get("/api/admin/users/{username}/tokens", tags=["admin"])
    def tokens(username: str, user: User = Depends(current)):
        """A user's API tokens (never the secrets)."""
        return agency_admin(state, user).tokens(username)

    @app.post("/api/admin/users/{username}/tokens", tags=["admin"], status_code=201)
    def issue_token(username: str, body: NewToken, user: User = Depends(current)):
        """Issue an API token to a user of your agency; the secret is in this response only."""
        admin = agency_admin(state, user, body.reason)
        token_id, secret = admin.create_token(username, check_text("label", body.label, "name"), reason=body.reason)
        return {"id": token_id, "user": username, "token": secret}

    @app.delete("/api/admin/tokens/{token_id}", tags=["admin"])
    def revoke_token(token_id: int, body: Because = Body(...), user: User = Depends(current)):
        agency_admin(state, user, body.reason).revoke_token(token_id, reason=body.reason)
        return {"revoked": token_id}

    @app.get("/api/admin/agencies", tags=["admin"])
    def agencies(user: User = Depends(current)):
        """The other agencies' names (to share with) and your agency's collections."""
        admin = agency_admin(state, user)
        return {"agency": user.agency, "collections": admin.collections(), "others": admin.agencies()}

    @app.get("/api/admin/shares", tags=["admin"])
    def shares(user: User = Depends(current)):
        """Agreements on your agency's collections (granted) and on others' shared with it (received)."""
        return agency_admin(state, user).shares()

    @app.post("/api/admin/shares", tags=["admin"], status_code=201)
    def grant(body: NewShare, user: User = Depends(current)):
        """Let another agency search one of your agency's collections (until a date, or until revoked)."""
        admin = agency_admin(state, user, body.reason)
        return {"id": admin.grant(body.collection, body.agency, until=body.until, reason=body.reason)}

    @app.delete("/api/admin/shares/{share_id}", tags=["admin"])
    def revoke(share_id: int, body: Because = Body(...), user: User = Depends(current)):
        """End an agreement on one of your agency's collections."""
        agency_admin(state, user, body.reason).revoke(share_id, reason=body.reason)
        return {"revoked": share_id}


def add_admin_pages(app: FastAPI, state, render, page_user) -> None:
    """The /admin page: the agency's users (add, roles, disable/enable), their API tokens (issue, revoke; a new
    secret is shown once, in the reply to the form, not cached) and its sharing agreements."""

    def back() -> RedirectResponse:
        return RedirectResponse("/admin", status_code=303)

    def page(request: Request, user, status: int = 200, **extra):
        admin = agency_admin(state, user)
        users = admin.users()
        tokens = [t | {"user": u["username"]} for u in users for t in admin.tokens(u["username"])]
        response = render(request, "admin.html", user, status=status, users=users, shares=admin.shares(),
                          roles=ROLES, collections=admin.collections(), others=admin.agencies(), tokens=tokens,
                          **extra)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin_page(request: Request, user=Depends(page_user)):
        return page(request, user)

    @app.post("/admin/tokens", include_in_schema=False)
    def page_issue_token(request: Request, username: str = Form(...), label: str = Form("api"),
                         reason: str = Form(...), user=Depends(page_user)):
        label = check_text("label", label.strip() or "api", "name", state.settings.text_limits)
        token_id, secret = agency_admin(state, user, reason).create_token(username, label, reason=reason)
        return page(request, user, status=201, new={"id": token_id, "user": username, "label": label, "token": secret})

    @app.post("/admin/tokens/{token_id}/revoke", include_in_schema=False)
    def page_revoke_token(token_id: int, reason: str = Form(...), user=Depends(page_user)):
        agency_admin(state, user, reason).revoke_token(token_id, reason=reason)
        return back()

    @app.post("/admin/users", include_in_schema=False)
    def page_add_user(username: str = Form(...), password: str = Form(...), roles: list[str] = Form([]),
                      reason: str = Form(...), user=Depends(page_user)):
        agency_admin(state, user, reason).add_user(
            check_text("username", username, "name", state.settings.text_limits), password, roles, reason=reason)
        return back()

    @app.post("/admin/users/{username}/roles", include_in_schema=False)
    def page_roles(username: str, roles: list[str] = Form([]), reason: str = Form(...), user=Depends(page_user)):
        agency_admin(state, user, reason).set_roles(username, roles, reason=reason)
        return back()

    @app.post("/admin/users/{username}/{change}", include_in_schema=False)
    def page_active(username: str, change: str, reason: str = Form(...), user=Depends(page_user)):
        if change not in ("disable", "enable"):
            raise NotFound(f"no page /admin/users/{username}/{change}")
        agency_admin(state, user, reason).set_active(username, change == "enable", reason=reason)
        return back()

    @app.post("/admin/shares", include_in_schema=False)
    def page_grant(collection: str = Form(...), agency: str = Form(...), until: str = Form(""),
                   reason: str = Form(...), user=Depends(page_user)):
        agency_admin(state, user, reason).grant(collection, agency, until=until or None, reason=reason)
        return back()

    @app.post("/admin/shares/{share_id}/revoke", include_in_schema=False)
    def page_revoke(share_id: int, reason: str = Form(...), user=Depends(page_user)):
        agency_admin(state, user, reason).revoke(share_id, reason=reason)
        return back()
