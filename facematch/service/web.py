"""The reviewer web page: server-rendered Jinja2 templates, one small vendored script (static/facematch.js).

The pages use the same checks as the API (roles, agency, CSRF on every form post). Wording follows the
library's: candidates are leads for review, never "identified". Opening another person's search, and the
audit view, first ask for the reason that is recorded (DPA 2018 s.62) in a form that POSTs it (never in a
URL: access logs keep URLs); the server records the consultation and redirects (303) to the page with an
opaque consultation id bound to the session (``?c=ID``, facematch/service/consultation.py), which the page
carries through its images, review forms and further audit pages.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from facematch.errors import AuthenticationFailed, InvalidArgument, NotFound, PermissionDenied
from facematch.search.bands import REACH_HEADING, one_in, reach_summary
from facematch.service.admin import add_admin_pages
from facematch.service.app import (ServiceState, audit_csv_response, audit_filter, consultation_since, run_search,
                                   search_view, set_session_cookie)
from facematch.service.auth import SESSION_COOKIE, authenticate, check_csrf, require
from facematch.service.consultation import (QUERY_REASON_REFUSED, candidate_anchor, consultation_entry,
                                           consultation_ref)
from facematch.service.jobs import INGEST_PAGE
from facematch.service.token_pages import add_token_pages

__all__ = ["add_web_routes", "safe_next"]

_HERE = Path(__file__).parent
#: the agency last logged in with on this browser, to preselect it (not a secret: the login page lists them)
AGENCY_COOKIE = "fm_agency"
_MEANING = {"strong": "closer than almost all comparisons of different people in calibration",
            "possible": "close; different people score this close now and then",
            "weak": "weak similarity; different people often score this close",
            "below": "outside every band: listed for completeness only"}


class LoginRequired(Exception):
    """A page needs a session: answered with a redirect to the login page."""


def safe_next(target: str | None) -> str:
    """Only a local path may follow the login (no open redirects: no scheme, host, // or backslash)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or ":" in target.split("?")[0]:
        return "/"
    return target


def add_web_routes(app: FastAPI, state: ServiceState, current) -> None:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals.update(one_in=one_in, meaning=_MEANING, reach_summary=reach_summary,
                                 reach_heading=REACH_HEADING)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    async def page_user(request: Request):
        try:
            user = authenticate(state.fm, request)
        except AuthenticationFailed:
            raise LoginRequired() from None
        await check_csrf(request)
        return user

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired):
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    def render(request, name, user=None, status=200, **ctx):
        return templates.TemplateResponse(request, name, {"user": user, "csrf": getattr(request.state, "csrf", ""),
                                                          **ctx}, status_code=status)

    app.state.error_page = lambda request, status, message: render(request, "error.html", status=status,
                                                                   message=message)

    def login_form(request, chosen: str = "", **ctx):
        """Usernames are unique per agency: the form asks for the agency from a list (the browser's last
        choice preselected), so nobody has to spell it."""
        agencies = [a["name"] for a in state.fm.accounts.agencies()]
        chosen = chosen or request.cookies.get(AGENCY_COOKIE, "")
        return render(request, "login.html", agencies=agencies, chosen=chosen if chosen in agencies else "", **ctx)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/"):
        return login_form(request, next=safe_next(next))

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(...), password: str = Form(...), agency: str = Form(""),
              next: str = Form("/")):
        state.login_limit.hit(f"{request.client.host if request.client else '?'}:{username}@{agency}")
        try:
            user = state.fm.accounts.authenticate(username, password, agency)
        except AuthenticationFailed as exc:
            return login_form(request, agency, status=401, error=str(exc), next=safe_next(next))
        cookie, _ = state.fm.accounts.create_session(user, hours=state.service.session_hours)
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session_cookie(response, cookie, state)
        response.set_cookie(AGENCY_COOKIE, user.agency, max_age=400 * 86400, path="/login", httponly=True,
                            samesite="strict")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, user=Depends(page_user)):
        state.fm.accounts.end_session(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, user=Depends(page_user)):
        searches = state.fm.accounts.agency_searches(user.agency_id, limit=50)
        return render(request, "home.html", user, cases=state.fm.accounts.cases(user.agency_id), searches=searches)

    @app.get("/cases/{case}", response_class=HTMLResponse, include_in_schema=False)
    def case_page(request: Request, case: str, user=Depends(page_user)):
        searches = state.fm.accounts.agency_searches(user.agency_id, case=case)
        return render(request, "case.html", user, case=case, searches=searches,
                      collections=state.fm.accounts.visible_collections(user))

    @app.post("/search", include_in_schema=False)
    async def new_search(request: Request, images: list[UploadFile] = File(...), case: str = Form(...),
                         reason: str = Form(...), boxes: str = Form(""), collections: list[str] = Form([]),
                         user=Depends(page_user)):
        search_id = await run_search(state, user, images, case=case, reason=reason, boxes=boxes,
                                     collections=",".join(collections), top=10)
        return RedirectResponse(f"/searches/{search_id}", status_code=303)

    def agency_search(user, search_id: int) -> dict:
        """The search of the user's agency (404 otherwise), to the roles that read searches (403 otherwise)."""
        if not any(user.has(r) for r in ("investigator", "reviewer", "supervisor")):
            raise PermissionDenied("reading searches needs one of the roles investigator, reviewer, supervisor")
        found = state.fm.accounts.agency_search(user.agency_id, search_id)
        if found is None:
            raise NotFound(f"no search with id {search_id}")
        return found

    def opened(request: Request, search_id: int, entry: int, anchor: str | None = None) -> RedirectResponse:
        """To the results page under consultation ``entry``: a same-site path built here, never taken from input;
        ``anchor`` (a candidate's, checked by ``candidate_anchor``) only names a place on that page."""
        return RedirectResponse(f"/searches/{int(search_id)}?c={quote(str(consultation_ref(request, entry)))}"
                                + (f"#{anchor}" if anchor else ""), status_code=303)

    @app.get("/searches/{search_id}", response_class=HTMLResponse, include_in_schema=False)
    def results(request: Request, search_id: int, c: str | None = None, user=Depends(page_user)):
        """Within a consultation (``c``) the results; else another person's search asks for a reason first (a
        form that posts it), and its author's is opened with the search's own justification."""
        found = agency_search(user, search_id)
        if "reason" in request.query_params:  # an old link or bookmark: the reason is not read, nor recorded
            return render(request, "consult.html", user, status=400, search=found, error=QUERY_REASON_REFUSED)
        try:
            entry = consultation_entry(request, c)
            doc = None if entry is None else search_view(state, user, search_id, consultation=entry,
                                                         ref=lambda e: consultation_ref(request, e))
        except InvalidArgument:  # a link copied from someone else, or from before a log-out: ask again
            entry, doc = None, None
            refused = ("the consultation in this link is not one of your current session's (someone else's, from "
                       "before you logged out, or over): state your own reason to open the search")
        else:
            refused = None
        if doc is not None:
            return render(request, "results.html", user, doc=doc)
        if found["user"] != user.username:
            return render(request, "consult.html", user, search=found, error=refused, status=422 if refused else 200)
        # the author: recorded with the search's own case and justification, then redirected
        return opened(request, search_id, search_view(state, user, search_id)["consultation_entry"])

    @app.post("/searches/{search_id}/consult", include_in_schema=False)
    def consult(request: Request, search_id: int, reason: str = Form(""), anchor: str = Form(""),
                user=Depends(page_user)):
        """The reason stated in the form: the consultation is recorded, then the results open under it, at the
        candidate the review queue linked to (``anchor``, kept only when it is a candidate anchor)."""
        found = agency_search(user, search_id)
        anchor = candidate_anchor(anchor)
        if not reason.strip():
            return render(request, "consult.html", user, status=422, search=found, anchor=anchor,
                          error="state why you are opening this search: it is recorded in the audit log")
        doc = search_view(state, user, search_id, reason=reason.strip())
        return opened(request, search_id, doc["consultation_entry"], anchor)

    @app.post("/searches/{search_id}/decide", include_in_schema=False)
    def decide(request: Request, search_id: int, probe: int = Form(...), rank: int = Form(...),
               decision: str = Form(...), note: str = Form(...), list_name: str = Form("custody", alias="list"),
               c: str = Form(""), user=Depends(page_user)):
        require(user, "reviewer")
        agency_search(user, search_id)  # 404 for another agency's search
        entry = consultation_entry(request, c)  # only this session's consultation goes into the redirect
        state.fm.review_candidate(search_id, probe, rank, reviewer=user.username, decision=decision, note=note,
                                  candidate_list=list_name)
        back = f"/searches/{search_id}" + (f"?c={quote(str(consultation_ref(request, entry)))}" if entry else "")
        return RedirectResponse(f"{back}#p{probe}-{quote(list_name)}-{rank}", status_code=303)

    @app.get("/queue", response_class=HTMLResponse, include_in_schema=False)
    def queue(request: Request, user=Depends(page_user)):
        require(user, "reviewer")
        return render(request, "queue.html", user, rows=state.fm.review_queue(user.agency_id, reviewer=user.username))

    def audit_url(request: Request, filters: dict, entry: int, **more) -> str:
        query = {k: v for k, v in filters.items() if v} | more | {"k": consultation_ref(request, entry)}
        return "/audit?" + urlencode(query)

    @app.get("/audit", include_in_schema=False)
    def audit(request: Request, action: str = "", actor: str = "", case: str = "", since: str = "", until: str = "",
              before: int | None = None, format: str = "html", k: str | None = None, user=Depends(page_user)):
        """Nothing is shown (or exported) until the supervisor states, in a form that posts it, why they read
        the trail; that reading (``k``) then goes on here: a page of entries at a time (filtered in SQL),
        "older entries" for the next, other filters, the CSV export, each recorded with the reason stated."""
        require(user, "supervisor")
        filters = {"action": action, "actor": actor, "case": case, "since": since, "until": until}
        if "reason" in request.query_params:
            return render(request, "audit.html", user, status=400, rows=None, filters=filters, error=QUERY_REASON_REFUSED)
        entry = consultation_entry(request, k)
        if entry is None:
            return render(request, "audit.html", user, rows=None, filters=filters)
        reading = state.fm.audit_reading(entry, user=user.username, since=consultation_since(state))
        if reading is None:
            raise InvalidArgument("this reading of the audit trail is over: state your reason again")
        where = audit_filter(user, reading["reason"], **filters)
        if format == "csv":
            return audit_csv_response(state.fm.audit_export(where, user=user.username, reason=reading["reason"]))
        rows, after = state.fm.audit_trail(where, user=user.username, reason=reading["reason"], before=before,
                                           limit=state.service.audit_page_size, consultation=entry)
        return render(request, "audit.html", user, rows=rows, filters=filters, reason=reading["reason"],
                      k=consultation_ref(request, entry), before=before,
                      older=audit_url(request, filters, entry, before=after) if after else None,
                      export=audit_url(request, filters, entry, format="csv"))

    @app.post("/audit", include_in_schema=False)
    def audit_reason(request: Request, reason: str = Form(""), action: str = Form(""), actor: str = Form(""),
                     case: str = Form(""), since: str = Form(""), until: str = Form(""), format: str = Form("html"),
                     user=Depends(page_user)):
        """The reason stated: an export is answered at once (recorded), a reading is recorded and redirected
        to its first page."""
        require(user, "supervisor")
        filters = {"action": action, "actor": actor, "case": case, "since": since, "until": until}
        if not reason.strip():
            return render(request, "audit.html", user, status=422, rows=None, filters=filters,
                          error="state why you are reading the audit trail: it is recorded in the audit log")
        where = audit_filter(user, reason.strip(), **filters)
        if format == "csv":
            return audit_csv_response(state.fm.audit_export(where, user=user.username, reason=reason.strip()))
        entry = state.fm.record_audit_reading(where, user=user.username, reason=reason.strip(),
                                              limit=state.service.audit_page_size)
        return RedirectResponse(audit_url(request, filters, entry), status_code=303)

    add_admin_pages(app, state, render, page_user)
    add_token_pages(app, state, render, page_user)

    @app.get("/ingest", response_class=HTMLResponse, include_in_schema=False)
    def ingest_page(request: Request, before: int | None = Query(None, ge=1), user=Depends(page_user)):
        require(user, "operator")
        jobs = state.jobs.listing(state.fm.catalogue, user.agency_id, before=before)
        oldest = min((j["run_id"] for j in jobs if j["run_id"]), default=None)
        older = oldest if oldest and state.fm.catalogue.ingest_runs(user.agency_id, limit=1, before=oldest) else None
        return render(request, "ingest.html", user, jobs=jobs, before=before, older=older, page_size=INGEST_PAGE,
                      roots=[str(r) for r in state.service.ingest_roots])
