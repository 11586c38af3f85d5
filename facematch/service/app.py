"""The HTTP API (JSON under /api, OpenAPI at /docs) and the app that also serves the reviewer pages.

Every route authenticates (bearer token or session), checks the role, and answers 404 for anything of
another agency (its existence is not revealed). Searches run in the worker pool (facematch/service/worker.py).

Consultations are recorded with the user's own reason (DPA 2018 s.62): reading a stored search, one of
its face images or the audit log takes the ``X-Reason`` header; ``reason`` in a query string is refused
(400: access logs keep URLs). A search's reply carries its consultation; its face image URLs carry it
(``consultation=ID``, facematch/service/consultation.py), so the images shown with a search are covered by
that one entry. See docs/service.md "What is logged and why".
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import logging
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from facematch.api import Facematch
from facematch.errors import (
    AuthenticationFailed,
    Conflict,
    FacematchError,
    ImageTooLarge,
    ImageUnreadable,
    InvalidArgument,
    InvalidBox,
    NotFound,
    PermissionDenied,
    SourceNotFound,
)
from facematch.service import worker
from facematch.service.admin import add_admin_routes
from facematch.service.auth import RateLimited, RateLimiter, authenticate, check_csrf, require
from facematch.service.consultation import consultation_entry, consultation_ref, refuse_query_reason
from facematch.service.jobs import INGEST_PAGE, IngestJobs
from facematch.service.uploads import face_crop, keep_probe, sniff
from facematch.settings import ServiceSettings, Settings
from facematch.store.accounts import User
from facematch.validation import check_text
from facematch.store.audit_query import MAX_PAGE, AuditFilter

__all__ = ["create_app", "ServiceState", "STATUS", "search_view", "audit_filter", "audit_csv_response", "parse_boxes",
    "stated_reason", "own_search_reason"]

log = logging.getLogger(__name__)

#: HTTP status of each named error (anything else: 500 without details).
STATUS = [(AuthenticationFailed, 401), (PermissionDenied, 403), (NotFound, 404), (Conflict, 409),
          (ImageTooLarge, 413), (ImageUnreadable, 415), (InvalidBox, 422), (InvalidArgument, 422),
          (SourceNotFound, 422)]


class ServiceState:
    """What the routes share: the library, the worker pool, ingest jobs and rate limiters."""

    def __init__(self, settings: Settings, service: ServiceSettings, pool: ProcessPoolExecutor | None):
        # a search analyses its images in its own process: the server has threads (no fork) and its
        # searches run in the worker pool (no pool inside a pool)
        settings = settings.replace(search_workers=1)
        self.settings, self.service = settings, service
        self.fm = Facematch(settings=settings)
        self.pool = pool
        self.jobs = IngestJobs(Facematch(settings=settings), workers=1)
        self.search_limit = RateLimiter(service.searches_per_minute)
        self.login_limit = RateLimiter(service.logins_per_minute)


class Decision(BaseModel):
    probe: int
    rank: int
    decision: str
    note: str
    list: str = "custody"


class Login(BaseModel):
    """``username`` with ``agency``, or ``username`` as ``name@agency`` (usernames are unique per agency)."""

    username: str
    password: str
    agency: str | None = None


def parse_boxes(text: str, n: int) -> list:
    """Boxes per image: a JSON list (``[[x,y,w,h], null]``), "x,y,w,h;;x,y,w,h", or empty (none)."""
    text = (text or "").strip()
    if not text:
        return [None] * n
    try:
        raw = json.loads(text) if text.startswith("[") else [p.strip() or None for p in text.split(";")]
        boxes = [None if b in (None, "", []) else tuple(int(round(float(v))) for v in
                 (b.split(",") if isinstance(b, str) else b)) for b in raw]
    except (ValueError, TypeError, AttributeError):
        raise InvalidBox(f"boxes must be x,y,w,h per image (JSON list or ';'-separated), got {text[:80]!r}") from None
    if len(boxes) == 1 and n > 1:
        boxes = boxes * n
    if len(boxes) != n or any(b is not None and (len(b) != 4 or b[2] < 1 or b[3] < 1) for b in boxes):
        raise InvalidBox(f"give one box x,y,w,h (positive width and height) or none per image ({n} images)")
    return boxes


def stated_reason(request: Request) -> str | None:
    """The reason a request states in its ``X-Reason`` header; None when blank. A ``reason`` in the query
    string is refused (400), never read."""
    refuse_query_reason(request)
    text = request.headers.get("x-reason")
    return text.strip() if text and text.strip() else None


def own_search_reason(found: dict) -> str:
    """The reason recorded when a search's author looks at it again without stating one (documented)."""
    return f"own search in case {found['case_ref']}; its justification: {found['reason']}"


def consultation_since(state: ServiceState) -> str:
    """A consultation covers its search's images and pages for as long as a session lasts."""
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=state.service.session_hours)
    return since.replace(microsecond=0).isoformat()


def _agency_search(state: ServiceState, user: User, search_id: int) -> dict:
    found = state.fm.accounts.agency_search(user.agency_id, search_id)
    if found is None:
        raise NotFound(f"no search with id {search_id}")
    return found


def search_view(state: ServiceState, user: User, search_id: int, *, reason: str | None = None,
                consultation: int | None = None, ref=lambda entry: entry) -> dict:
    """A stored search as its agency sees it: candidates, face image URLs, two-person reviews.

    The viewing is a consultation (DPA 2018 s.62), recorded with ``reason``; without one, it goes on an
    earlier ``consultation`` of the user's (no new entry), or, for the search's own author only, is recorded
    with the search's case and justification (marked ``reason_stated: false``). Anyone else must state a
    reason: ``InvalidArgument``. ``ref`` names the consultation in the reply and its image URLs
    (``consultation_ref``: opaque and bound to the session for a browser, the entry id for a token).
    """
    found = _agency_search(state, user, search_id)
    if consultation is not None:
        result = state.fm.continue_consultation(search_id, consultation, user=user.username,
                                                since=consultation_since(state))
        entry = consultation
    elif reason:
        result, entry = state.fm.consult(search_id, user=user.username, reason=reason)
    elif found["user"] == user.username:
        result, entry = state.fm.consult(search_id, user=user.username, reason=own_search_reason(found), stated=False)
    else:
        raise InvalidArgument(f"state a reason for consulting search {search_id}, run by {found['user']} "
                              "(header X-Reason); it is recorded in the audit log")
    reviews = state.fm.candidate_reviews(search_id, viewer=user.username)
    doc = result.to_dict() | {"consultation": ref(entry), "consultation_entry": entry}
    collections = state.fm.accounts.face_collections([c["face_id"] for p in doc["probes"] for c in p["subjects"]])
    for probe in doc["probes"]:
        for cand in probe["subjects"]:  # whose subject: one reference may be two agencies' subjects
            cand["collection"] = collections.get(cand["face_id"])
        probe.pop("path", None)
        probe["face_url"] = f"/api/searches/{search_id}/probes/{probe['probe_no']}/face.jpg?consultation={ref(entry)}"
        for list_name, key in (("custody", "subjects"), ("scene", "scene_faces")):
            for cand in probe[key]:
                cand.pop("image_path", None)
                cand["face_url"] = (f"/api/faces/{cand['face_id']}/face.jpg?consultation={ref(entry)}"
                                    if cand["face_id"] else None)
                seen = reviews.get((probe["probe_no"], list_name, cand["rank"]),
                                   {"outcome": "awaiting first review", "hidden": 0, "reviews": []})
                cand["review"] = {"outcome": seen["outcome"], "hidden_reviews": seen["hidden"],
                                  "reviews": [r.__dict__ for r in seen["reviews"]]}
    return doc


def image_access(state: ServiceState, user: User, request: Request, consultation: str | None, *, covered,
                 **ids) -> None:
    """Let one face image through: within the user's ``consultation`` of a search that shows it
    (``covered(search_id)``), or with a stated reason (header X-Reason, recorded); else ``InvalidArgument``."""
    reason = stated_reason(request)
    consultation = consultation_entry(request, consultation)
    if consultation is not None:
        search_id = state.fm.consultation_search(consultation, user=user.username, since=consultation_since(state))
        if search_id is None or not covered(search_id):
            raise InvalidArgument(f"consultation {consultation} is not yours, is over, or does not show this image: "
                                  "state a reason (header X-Reason)")
        return
    if reason is None:
        raise InvalidArgument("state a reason for viewing this image (header X-Reason), "
                              "or give the consultation of the search it belongs to (consultation=ID)")
    state.fm.record_image_view(user=user.username, reason=reason, **ids)


def audit_filter(user: User, reason: str | None, *, action: str | None = None, actor: str | None = None,
                 case: str | None = None, since: str | None = None, until: str | None = None) -> AuditFilter:
    """The entries of ``user``'s agency that a supervisor asked for (filtered in SQL: facematch.store.audit_query).
    ``InvalidArgument`` without a reason (reading the audit log is itself recorded) or with a bad date."""
    if not reason:
        raise InvalidArgument("state a reason for reading the audit log (header X-Reason); it is recorded in "
                              "the audit log")
    return AuditFilter(user.agency_id, actor=actor or None, action=action or None, case=case or None,
                       since=since or None, until=until or None)


def create_app(settings: Settings, service: ServiceSettings | None = None, *,
               pool: ProcessPoolExecutor | None = None, web: bool = True) -> FastAPI:
    """The service app. Without ``pool`` searches run in-process (tests); ``serve`` passes a worker pool."""
    service = service or ServiceSettings()
    state = ServiceState(settings, service, pool)
    app = FastAPI(title="facematch service", version="1",
                  description="Ranked investigative leads for trained human review. Never an identification.")
    app.state.fm = state
    _error_handlers(app)
    _middleware(app, service)

    async def current(request: Request) -> User:
        user = authenticate(state.fm, request)
        await check_csrf(request)
        return user

    app.state.current_user = current
    _account_routes(app, state, current)
    _search_routes(app, state, current)
    _review_routes(app, state, current)
    _ingest_routes(app, state, current)
    add_admin_routes(app, state, current)
    if web:
        from facematch.service.web import add_web_routes

        add_web_routes(app, state, current)
    return app


def _error_handlers(app: FastAPI) -> None:
    def reply(request: Request, status: int, message: str, headers: dict | None = None):
        renderer = getattr(app.state, "error_page", None)
        if renderer and not request.url.path.startswith("/api") and "text/html" in request.headers.get("accept", ""):
            return renderer(request, status, message)
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)

    @app.exception_handler(FacematchError)
    async def named(request: Request, exc: FacematchError):
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
        return reply(request, status, str(exc) if status != 500 else "internal error (logged on the server)")

    @app.exception_handler(RateLimited)
    async def limited(request: Request, exc: RateLimited):
        return reply(request, 429, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return reply(request, 422, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException):
        return reply(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return reply(request, 500, "internal error (logged on the server)")


def _middleware(app: FastAPI, service: ServiceSettings) -> None:
    @app.middleware("http")
    async def limits_and_headers(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > service.max_upload_bytes:
            return JSONResponse({"error": f"request body of {int(length):,} bytes exceeds the limit of "
                                 f"{service.max_upload_bytes:,}", "status": 413}, status_code=413)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith(("/docs", "/openapi", "/redoc")):
            response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:")
        return response


def _account_routes(app: FastAPI, state: ServiceState, current) -> None:
    accounts = lambda: state.fm.accounts  # noqa: E731 - this thread's connection

    @app.post("/api/login", tags=["accounts"])
    def login(body: Login, request: Request):
        """Log in: sets the HttpOnly session cookie and returns the CSRF token for state-changing requests."""
        state.login_limit.hit(f"{request.client.host if request.client else '?'}:{body.username}@{body.agency or ''}")
        user = accounts().authenticate(body.username, body.password, body.agency)
        cookie, csrf = accounts().create_session(user, hours=state.service.session_hours)
        response = JSONResponse({"user": user.username, "login": user.login, "agency": user.agency,
                                 "roles": sorted(user.roles), "csrf_token": csrf})
        set_session_cookie(response, cookie, state)
        return response

    @app.post("/api/logout", tags=["accounts"])
    def logout(request: Request, user: User = Depends(current)):
        accounts().end_session(request.cookies.get("fm_session", ""))
        response = JSONResponse({"logged_out": user.username})
        response.delete_cookie("fm_session", path="/")
        return response

    @app.get("/api/me", tags=["accounts"])
    def me(user: User = Depends(current)):
        return {"user": user.username, "login": user.login, "agency": user.agency, "roles": sorted(user.roles),
                "collections": accounts().visible_collections(user)}

    @app.get("/api/tokens", tags=["accounts"])
    def my_tokens(user: User = Depends(current)):
        """Your API tokens, revoked ones included (never the secrets)."""
        return accounts().tokens(user)

    @app.post("/api/tokens", tags=["accounts"], status_code=201)
    def new_token(label: str = Form("api"), user: User = Depends(current)):
        """A new API token for yourself; the secret is in this response only."""
        token_id, secret = accounts().create_token(user, label)
        return {"id": token_id, "token": secret}

    @app.delete("/api/tokens/{token_id}", tags=["accounts"])
    def revoke_token(token_id: int, user: User = Depends(current)):
        accounts().revoke_token(user, token_id)
        return {"revoked": token_id}


def set_session_cookie(response: Response, cookie: str, state: ServiceState) -> None:
    response.set_cookie("fm_session", cookie, httponly=True, samesite="strict", path="/",
                        max_age=int(state.service.session_hours * 3600))


async def run_search(state: ServiceState, user: User, images: list[UploadFile], *, case: str, reason: str,
                     boxes: str, collections: str, top: int | None) -> int:
    """Check the request and its uploads, keep the probes, and run the search in the worker pool."""
    require(user, "investigator")
    if not case.strip() or not reason.strip():
        raise InvalidArgument("a case reference and a justification are both required")
    if not images or len(images) > state.service.max_images_per_search:
        raise InvalidArgument(f"give 1 to {state.service.max_images_per_search} images")
    state.search_limit.hit(user.username)
    paths = []
    for upload in images:
        data = await upload.read(state.service.max_upload_bytes + 1)
        if len(data) > state.service.max_upload_bytes:
            raise ImageTooLarge(f"{upload.filename!r} exceeds {state.service.max_upload_bytes:,} bytes")
        suffix, _, _ = sniff(data, upload.filename or "upload", state.service.max_probe_pixels)
        paths.append(str(keep_probe(data, suffix, state.settings.data_dir)))
    box_list = parse_boxes(boxes, len(paths))
    chosen = [c.strip() for c in collections.split(",") if c.strip()] or None
    args = (user.id, paths, box_list, case.strip(), reason.strip(), chosen, top)
    if state.pool is None:
        return await asyncio.to_thread(worker.search_for, state.fm, *args)
    return await asyncio.get_running_loop().run_in_executor(state.pool, worker.search_job, *args)


def _search_routes(app: FastAPI, state: ServiceState, current) -> None:
    @app.post("/api/searches", tags=["search"], status_code=201)
    async def create_search(images: list[UploadFile] = File(..., description="probe images (JPEG/PNG/WebP/BMP)"),
                            case: str = Form(..., description="case reference (required)"),
                            reason: str = Form(..., description="justification (required, logged)"),
                            boxes: str = Form("", description="x,y,w,h per image: JSON list or ';'-separated"),
                            collections: str = Form("", description="comma-separated; default: all you may search"),
                            top: int | None = Form(None, ge=1, le=100), request: Request = None,
                            user: User = Depends(current)):
        """Search probe images over the collections you may see; stored and audited with case and reason."""
        search_id = await run_search(state, user, images, case=case, reason=reason, boxes=boxes,
                                     collections=collections, top=top)
        return await asyncio.to_thread(lambda: search_view(state, user, search_id,
                                                           ref=lambda entry: consultation_ref(request, entry)))

    @app.get("/api/searches", tags=["search"])
    def list_searches(case: str | None = None, user: User = Depends(current)):
        _any_role(user, "investigator", "reviewer", "supervisor")
        return state.fm.accounts.agency_searches(user.agency_id, case=case)

    @app.get("/api/searches/{search_id}", tags=["search"])
    def get_search(request: Request, search_id: int, consultation: str | None = _CONSULTATION,
                   user: User = Depends(current)):
        """A stored search with its candidates and reviews (first reviews stay hidden from others).

        Recorded as a consultation with your reason (header X-Reason), required unless you ran the search
        (then its case and justification are recorded) or you continue an earlier ``consultation``."""
        _any_role(user, "investigator", "reviewer", "supervisor")
        _agency_search(state, user, search_id)  # another agency's: 404 whatever is given
        reason = stated_reason(request)
        return search_view(state, user, search_id, reason=reason, consultation=consultation_entry(request, consultation),
                           ref=lambda entry: consultation_ref(request, entry))

    @app.get("/api/searches/{search_id}/probes/{probe_no}/face.jpg", tags=["images"])
    def probe_face(request: Request, search_id: int, probe_no: int, consultation: str | None = _CONSULTATION,
                   user: User = Depends(current)):
        """One probe face; needs a reason (header X-Reason, recorded) or your ``consultation`` of this search."""
        _any_role(user, "investigator", "reviewer", "supervisor")
        _agency_search(state, user, search_id)
        path, box, _ = state.fm.accounts.probe_location(search_id, probe_no)
        image_access(state, user, request, consultation, covered=lambda sid: sid == search_id,
                     search_id=search_id, probe_no=probe_no)
        return _jpeg(face_crop(path, box))

    @app.get("/api/faces/{face_id}/face.jpg", tags=["images"])
    def gallery_face(request: Request, face_id: int, consultation: str | None = _CONSULTATION,
                     user: User = Depends(current)):
        """One gallery face; needs a reason (header X-Reason, recorded) or your ``consultation`` of a search
        showing it."""
        _any_role(user, "investigator", "reviewer", "supervisor")
        if not state.fm.accounts.face_visible(user, face_id):
            raise NotFound(f"no face {face_id}")
        path, box = state.fm.accounts.face_location(face_id)
        image_access(state, user, request, consultation, face_id=face_id,
                     covered=lambda sid: state.fm.accounts.search_shows_face(sid, face_id))
        return _jpeg(face_crop(path, box))

    @app.get("/api/probes/{sha256}", tags=["images"])
    def probe_image(request: Request, sha256: str, consultation: str | None = _CONSULTATION,
                    user: User = Depends(current)):
        """A whole probe image, by SHA-256, to the agency whose searches used it; needs a reason (header
        X-Reason) or your ``consultation`` of a search that used it."""
        _any_role(user, "investigator", "reviewer", "supervisor")
        found = list((state.settings.data_dir / "probes").glob(f"{sha256}.*")) if sha256.isalnum() else []
        if not found or not state.fm.accounts.probe_visible(user, sha256):
            raise NotFound("no such probe image")
        image_access(state, user, request, consultation, probe_sha256=sha256,
                     covered=lambda sid: state.fm.accounts.search_used_probe(sid, sha256))
        return Response(found[0].read_bytes(), media_type="application/octet-stream",
                        headers={"Cache-Control": "private, no-store"})


def _review_routes(app: FastAPI, state: ServiceState, current) -> None:
    @app.post("/api/searches/{search_id}/decisions", tags=["review"], status_code=201)
    def decide(search_id: int, body: Decision, user: User = Depends(current)):
        """Record your independent review of one candidate (possible match | not a match | inconclusive)."""
        require(user, "reviewer")
        _agency_search(state, user, search_id)
        review = state.fm.review_candidate(search_id, body.probe, body.rank, reviewer=user.username,
                                           decision=body.decision, note=body.note, candidate_list=body.list)
        return review.__dict__

    @app.get("/api/queue", tags=["review"])
    def queue(user: User = Depends(current)):
        require(user, "reviewer")
        return state.fm.review_queue(user.agency_id, reviewer=user.username)

    @app.get("/api/audit", tags=["audit"])
    def audit(request: Request, action: str | None = None, actor: str | None = None,
              case: str | None = Query(None, description="entries about this case of your agency's"),
              since: str | None = Query(None, description="YYYY-MM-DD or ISO date and time (UTC), inclusive"),
              until: str | None = Query(None, description="YYYY-MM-DD (the whole day) or ISO date and time, inclusive"),
              before: int | None = Query(None, description="the next page: the Link rel=next of the previous one"),
              limit: int = Query(state.service.audit_page_size, ge=1, le=MAX_PAGE), format: str = "json",
              user: User = Depends(current)):
        """Audit entries of your agency's users (supervisor), newest first, a page at a time (header ``Link``
        rel="next" while more match); ``format=csv`` streams every matching entry. Your reason (header
        X-Reason) is required and recorded."""
        require(user, "supervisor")
        reason = stated_reason(request)
        where = audit_filter(user, reason, action=action, actor=actor, case=case, since=since, until=until)
        if format == "csv":
            return audit_csv_response(state.fm.audit_export(where, user=user.username, reason=reason))
        rows, after = state.fm.audit_trail(where, user=user.username, reason=reason, before=before, limit=limit)
        headers = {"Link": f'<{request.url.include_query_params(before=after)}>; rel="next"'} if after else None
        return JSONResponse(rows, headers=headers)


def audit_csv_response(entries) -> StreamingResponse:
    """A CSV download streamed as the entries are read (one page of the log at a time, never all at once)."""
    def lines():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "at", "actor", "action", "details"])
        for n, r in enumerate(entries, start=1):
            writer.writerow([r["id"], r["at"], r["actor"], r["action"], json.dumps(r["details"], sort_keys=True)])
            if n % 500 == 0:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    return StreamingResponse(lines(), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="audit.csv"'})


def _ingest_routes(app: FastAPI, state: ServiceState, current) -> None:
    @app.post("/api/ingest", tags=["ingest"], status_code=202)
    async def start_ingest(folder: str = Form("", description="a folder under a configured ingest root"),
                           subject: str = Form("", description="subject reference for uploaded files"),
                           collection: str = Form("", description="default: your agency's collection"),
                           files: list[UploadFile] | None = File(None), user: User = Depends(current)):
        """Ingest custody images into one of your agency's collections; poll /api/ingest/{id}."""
        require(user, "operator")
        coll = state.fm.accounts.collection(collection) if collection else \
            state.fm.accounts.default_collection(user.agency_id)
        if coll["agency_id"] != user.agency_id:
            raise NotFound(f"no collection {collection!r} of your agency")
        source = _ingest_source(state, folder) if folder else await _uploaded_source(state, subject, files or [])
        job = state.jobs.start(source, collection=coll["name"], user=user.username, agency_id=user.agency_id)
        return job.to_dict()

    @app.post("/api/ingest/scene", tags=["ingest"], status_code=202)
    async def start_scene_ingest(case: str = Form(..., description="your agency's case the images belong to"),
                                 folder: str = Form("", description="a folder under a configured ingest root"),
                                 files: list[UploadFile] | None = File(None), user: User = Depends(current)):
        """Ingest crime-scene images into a case of your agency (created when new; only your agency sees
        its faces); poll /api/ingest/{id}."""
        require(user, "operator")
        case = check_text("case reference", case, "id", state.settings.text_limits)
        if not folder and not files:
            raise InvalidArgument("give a server folder under an ingest root, or upload the scene images")
        source = _ingest_source(state, folder) if folder else await _uploaded_source(state, "scene", files or [])
        job = state.jobs.start(source, case=case, agency=user.agency, user=user.username, agency_id=user.agency_id)
        return job.to_dict()

    @app.get("/api/ingest", tags=["ingest"])
    def ingest_jobs(before: int | None = Query(None, ge=1), limit: int = Query(INGEST_PAGE, ge=1, le=500),
                    user: User = Depends(current)):
        """Your agency's last ``limit`` ingests (default 50), newest first: the runs the catalogue records
        (also those started before this server, or from the command line into your collections) with the
        live progress of this server's jobs; state running, finished, failed (with its error) or
        interrupted (the ingest page polls it). ``before`` (a run id) pages back: the runs before it."""
        require(user, "operator")
        return state.jobs.listing(state.fm.catalogue, user.agency_id, limit=limit, before=before)

    @app.get("/api/ingest/{job_id}", tags=["ingest"])
    def ingest_progress(job_id: int, user: User = Depends(current)):
        require(user, "operator")
        job = state.jobs.get(job_id, user.agency_id)
        if job is None:
            raise NotFound(f"no ingest job {job_id}")
        return job.to_dict()


def _ingest_source(state: ServiceState, folder: str) -> Path:
    """A server folder, accepted only inside a configured ingest root (no ``..`` escapes, no links out)."""
    path = Path(folder).resolve()
    roots = [Path(r).resolve() for r in state.service.ingest_roots]
    if not any(path == root or root in path.parents for root in roots):
        raise PermissionDenied(f"{folder!r} is not under a configured ingest root")
    if not path.is_dir():
        raise NotFound(f"no folder {folder!r}")
    return path


async def _uploaded_source(state: ServiceState, subject: str, files: list[UploadFile]) -> Path:
    if not subject.strip() or not files:
        raise InvalidArgument("give a server folder, or files with the subject reference they show")
    if "/" in subject or subject.startswith("."):
        raise InvalidArgument("a subject reference cannot contain '/' or start with '.'")
    folder = state.settings.data_dir / "uploads" / uuid.uuid4().hex
    (folder / subject).mkdir(parents=True, exist_ok=True)
    for n, upload in enumerate(files):
        data = await upload.read(state.service.max_upload_bytes + 1)
        suffix, _, _ = sniff(data, upload.filename or "upload", state.service.max_probe_pixels)
        (folder / subject / f"{n:04d}{suffix}").write_bytes(data)
    return folder


_CONSULTATION = Query(None, description="your consultation of the search (its reply's 'consultation': the audit "
                                        "entry id with a token, an opaque id with a session): continues it "
                                        "without a new reason")


def _any_role(user: User, *roles: str) -> None:
    if not any(user.has(r) for r in roles):
        raise PermissionDenied(f"this needs one of the roles {', '.join(roles)}")


def _jpeg(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
