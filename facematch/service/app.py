"""The HTTP API (JSON under /api, OpenAPI at /docs) and the app that also serves the reviewer pages.

Every route authenticates (bearer token or session), checks the role, and answers 404 for anything of
another agency (its existence is not revealed). Searches run in the worker pool (facematch/service/worker.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
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
from facematch.service.auth import RateLimited, RateLimiter, authenticate, check_csrf, require
from facematch.service.jobs import IngestJobs
from facematch.service.uploads import face_crop, keep_probe, sniff
from facematch.settings import ServiceSettings, Settings
from facematch.store.accounts import User

__all__ = ["create_app", "ServiceState", "STATUS", "search_view", "audit_rows", "parse_boxes"]

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
    username: str
    password: str


class NewUser(BaseModel):
    username: str
    password: str
    agency: str
    roles: list[str]


class NewShare(BaseModel):
    collection: str
    agency: str
    until: str | None = None


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


def search_view(state: ServiceState, user: User, search_id: int) -> dict:
    """A stored search as its agency sees it: candidates, face image URLs, two-person reviews."""
    if state.fm.accounts.search_agency(search_id) != user.agency_id:
        raise NotFound(f"no search with id {search_id}")
    # the viewing is a consultation (DPA 2018 s.62): recorded with who and the search's own justification
    result, _ = state.fm.review(search_id, user=user.username,
                                reason=f"reviewing the candidates of search {search_id} in the service")
    reviews = state.fm.candidate_reviews(search_id, viewer=user.username)
    doc = result.to_dict()
    for probe in doc["probes"]:
        probe.pop("path", None)
        probe["face_url"] = f"/api/searches/{search_id}/probes/{probe['probe_no']}/face.jpg"
        for list_name, key in (("custody", "subjects"), ("scene", "scene_faces")):
            for cand in probe[key]:
                cand.pop("image_path", None)
                cand["face_url"] = f"/api/faces/{cand['face_id']}/face.jpg" if cand["face_id"] else None
                seen = reviews.get((probe["probe_no"], list_name, cand["rank"]),
                                   {"outcome": "awaiting first review", "hidden": 0, "reviews": []})
                cand["review"] = {"outcome": seen["outcome"], "hidden_reviews": seen["hidden"],
                                  "reviews": [r.__dict__ for r in seen["reviews"]]}
    return doc


def audit_rows(state: ServiceState, user: User, *, action: str | None = None, actor: str | None = None,
               since: str | None = None, until: str | None = None, limit: int = 500) -> list[dict]:
    """Audit entries made by the users of ``user``'s agency, newest first, filtered."""
    members = set(state.fm.accounts.agency_usernames(user.agency_id))
    rows = [r for r in state.fm.audit(action=action or None, limit=20_000, user=user.username,
                                      reason=f"supervisor audit view of agency {user.agency_id}")
            if r["actor"] in members]
    rows = [r for r in rows if (not actor or r["actor"] == actor) and (not since or r["at"] >= since)
            and (not until or r["at"] <= until)]
    return rows[:limit]


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
        state.login_limit.hit(f"{request.client.host if request.client else '?'}:{body.username}")
        user = accounts().authenticate(body.username, body.password)
        cookie, csrf = accounts().create_session(user, hours=state.service.session_hours)
        response = JSONResponse({"user": user.username, "agency": user.agency, "roles": sorted(user.roles),
                                 "csrf_token": csrf})
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
        return {"user": user.username, "agency": user.agency, "roles": sorted(user.roles),
                "collections": accounts().visible_collections(user)}

    @app.post("/api/tokens", tags=["accounts"], status_code=201)
    def new_token(label: str = Form("api"), user: User = Depends(current)):
        """A new API token for yourself; the secret is in this response only."""
        token_id, secret = accounts().create_token(user, label)
        return {"id": token_id, "token": secret}

    @app.delete("/api/tokens/{token_id}", tags=["accounts"])
    def revoke_token(token_id: int, user: User = Depends(current)):
        accounts().revoke_token(user, token_id)
        return {"revoked": token_id}

    @app.post("/api/admin/users", tags=["admin"], status_code=201)
    def add_user(body: NewUser, user: User = Depends(current)):
        require(user, "admin")
        made = accounts().add_user(body.username, body.password, agency=body.agency, roles=body.roles,
                                   actor=user.username)
        return {"user": made.username, "agency": made.agency, "roles": sorted(made.roles)}

    @app.post("/api/admin/agencies", tags=["admin"], status_code=201)
    def add_agency(name: str = Form(...), user: User = Depends(current)):
        require(user, "admin")
        return {"agency": name, "id": accounts().add_agency(name, actor=user.username)}

    @app.get("/api/admin/shares", tags=["admin"])
    def shares(user: User = Depends(current)):
        require(user, "admin")
        return accounts().shares()

    @app.post("/api/admin/shares", tags=["admin"], status_code=201)
    def grant(body: NewShare, user: User = Depends(current)):
        require(user, "admin")
        return {"id": accounts().share(body.collection, body.agency, actor=user.username, until=body.until)}

    @app.delete("/api/admin/shares/{share_id}", tags=["admin"])
    def revoke(share_id: int, user: User = Depends(current)):
        require(user, "admin")
        accounts().revoke_share(share_id, actor=user.username)
        return {"revoked": share_id}


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
                            top: int | None = Form(None, ge=1, le=100), user: User = Depends(current)):
        """Search probe images over the collections you may see; stored and audited with case and reason."""
        search_id = await run_search(state, user, images, case=case, reason=reason, boxes=boxes,
                                     collections=collections, top=top)
        return await asyncio.to_thread(search_view, state, user, search_id)

    @app.get("/api/searches", tags=["search"])
    def list_searches(case: str | None = None, user: User = Depends(current)):
        _any_role(user, "investigator", "reviewer", "supervisor")
        return state.fm.accounts.agency_searches(user.agency_id, case=case)

    @app.get("/api/searches/{search_id}", tags=["search"])
    def get_search(search_id: int, user: User = Depends(current)):
        """A stored search with its candidates and reviews (first reviews stay hidden from others)."""
        _any_role(user, "investigator", "reviewer", "supervisor")
        return search_view(state, user, search_id)

    @app.get("/api/searches/{search_id}/probes/{probe_no}/face.jpg", tags=["images"])
    def probe_face(search_id: int, probe_no: int, user: User = Depends(current)):
        _any_role(user, "investigator", "reviewer", "supervisor")
        if state.fm.accounts.search_agency(search_id) != user.agency_id:
            raise NotFound(f"no search with id {search_id}")
        path, box, _ = state.fm.accounts.probe_location(search_id, probe_no)
        return _jpeg(face_crop(path, box))

    @app.get("/api/faces/{face_id}/face.jpg", tags=["images"])
    def gallery_face(face_id: int, user: User = Depends(current)):
        _any_role(user, "investigator", "reviewer", "supervisor")
        if not state.fm.accounts.face_visible(user, face_id):
            raise NotFound(f"no face {face_id}")
        path, box = state.fm.accounts.face_location(face_id)
        return _jpeg(face_crop(path, box))

    @app.get("/api/probes/{sha256}", tags=["images"])
    def probe_image(sha256: str, user: User = Depends(current)):
        """A whole probe image, by SHA-256, to the agency whose searches used it."""
        _any_role(user, "investigator", "reviewer", "supervisor")
        found = list((state.settings.data_dir / "probes").glob(f"{sha256}.*")) if sha256.isalnum() else []
        if not found or not state.fm.accounts.probe_visible(user, sha256):
            raise NotFound("no such probe image")
        return Response(found[0].read_bytes(), media_type="application/octet-stream",
                        headers={"Cache-Control": "private, no-store"})


def _review_routes(app: FastAPI, state: ServiceState, current) -> None:
    @app.post("/api/searches/{search_id}/decisions", tags=["review"], status_code=201)
    def decide(search_id: int, body: Decision, user: User = Depends(current)):
        """Record your independent review of one candidate (possible match | not a match | inconclusive)."""
        require(user, "reviewer")
        if state.fm.accounts.search_agency(search_id) != user.agency_id:
            raise NotFound(f"no search with id {search_id}")
        review = state.fm.review_candidate(search_id, body.probe, body.rank, reviewer=user.username,
                                           decision=body.decision, note=body.note, candidate_list=body.list)
        return review.__dict__

    @app.get("/api/queue", tags=["review"])
    def queue(user: User = Depends(current)):
        require(user, "reviewer")
        return state.fm.review_queue(user.agency_id, reviewer=user.username)

    @app.get("/api/audit", tags=["audit"])
    def audit(action: str | None = None, actor: str | None = None, since: str | None = None,
              until: str | None = None, format: str = "json", user: User = Depends(current)):
        """Audit entries of your agency's users (supervisor); ``format=csv`` for a spreadsheet."""
        require(user, "supervisor")
        rows = audit_rows(state, user, action=action, actor=actor, since=since, until=until)
        if format != "csv":
            return rows
        return Response(audit_csv(rows), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="audit.csv"'})


def audit_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "action", "details"])
    for r in rows:
        writer.writerow([r["id"], r["at"], r["actor"], r["action"], json.dumps(r["details"], sort_keys=True)])
    return out.getvalue()


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


def _any_role(user: User, *roles: str) -> None:
    if not any(user.has(r) for r in roles):
        raise PermissionDenied(f"this needs one of the roles {', '.join(roles)}")


def _jpeg(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
