"""The shared service over a real catalogue: every role x endpoint, cross-agency leakage, sharing, two-person review,
agency-scoped administration and crime-scene ingest.

The catalogue is the ``frmdb_gallery`` fixture (12 real frmdb-dev subjects x 3 mugshots) copied, split
between two agencies: north owns subjects 040-045, south 046-051. Probes and crime-scene images are real
CCTV crops.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed (pip install -e '.[service]')")
from fastapi.testclient import TestClient  # noqa: E402

from facematch.search.bands import REACH_HEADING, reach_summary  # noqa: E402
from facematch.service.app import create_app  # noqa: E402
from facematch.settings import ServiceSettings  # noqa: E402
from tests.conftest import REPO, make_facematch, require_data  # noqa: E402

PASSWORD = "correct horse battery"
NORTH = [f"{n:03d}" for n in range(40, 46)]
SOUTH = [f"{n:03d}" for n in range(46, 52)]
USERS = {  # username: (agency, roles)
    "nina": ("north", ["investigator"]), "rita": ("north", ["reviewer"]), "ravi": ("north", ["reviewer"]),
    "sue": ("north", ["supervisor"]), "otto": ("north", ["operator"]), "adam": ("north", ["admin"]),
    "sam": ("south", ["investigator", "reviewer", "supervisor", "operator"]),
    "sara": ("south", ["admin"]),
}
ADMINS = {"adam", "sara"}


def who(username: str) -> str:
    """The name a user is recorded under (audit actor, searches, reviews): ``login@agency``."""
    return f"{username}@{USERS.get(username, ('north',))[0]}"

ADMIN_WHY = "staff change approved by the unit head"


@pytest.fixture(scope="module")
def service(frmdb_gallery, tmp_path_factory):
    _, summary, root = frmdb_gallery
    home = tmp_path_factory.mktemp("service") / "data"
    shutil.copytree(root, home)
    fm = make_facematch(home, workers=1)
    accounts = fm.accounts
    for agency in ("north", "south"):
        accounts.add_agency(agency, actor="setup")
    for name, (agency, roles) in USERS.items():
        accounts.add_user(name, PASSWORD, agency=agency, roles=roles, actor="setup")
    accounts.assign_run(summary.run_id, collection_id=accounts.collection("north-custody")["id"])
    south = accounts.collection("south-custody")["id"]
    with fm.catalogue.atomic() as conn:
        conn.execute("""UPDATE image_owners SET collection_id = ? WHERE image_id IN (SELECT i.id FROM images i
                        JOIN subjects s ON s.id = i.subject_id WHERE s.reference IN (%s))""" % ",".join("?" * 6),
                     (south, *SOUTH))
        conn.execute("""UPDATE images SET owner_agency = (SELECT c.agency_id FROM image_owners o
                        JOIN collections c ON c.id = o.collection_id WHERE o.image_id = images.id)
                        WHERE id IN (SELECT image_id FROM image_owners)""")
        conn.execute("""UPDATE subjects SET agency_id = (SELECT i.owner_agency FROM images i
                        WHERE i.subject_id = subjects.id LIMIT 1)""")  # a subject belongs to its images' agency
    ingest_root = home.parent / "ingest-root"
    (ingest_root / "052").mkdir(parents=True)
    for view in ("Img_33.jpg", "Img_23.jpg"):
        shutil.copy(require_data("frmdb-dev", "mugshots", "052", view), ingest_root / "052" / view)
    scene_root = home.parent / "scene-root"  # crime-scene stills of subject 043, for north's case
    (scene_root / "harbour").mkdir(parents=True)
    for view in ("Img_01.jpg", "Img_02.jpg"):
        shutil.copy(require_data("frmdb-dev", "cctv_crops", "043", view), scene_root / "harbour" / view)
    app = create_app(fm.settings, ServiceSettings(ingest_roots=(ingest_root, scene_root)))
    app.state.ingest_root, app.state.scene_root = ingest_root, scene_root
    yield app, fm
    fm.close()


_CLIENTS: dict = {}


def client(app, username: str | None, *, fresh: bool = False) -> TestClient:
    """A client logged in as ``username`` with a session cookie and its CSRF token (None: anonymous)."""
    if not fresh and username and (id(app), username) in _CLIENTS:
        return _CLIENTS[id(app), username]
    c = TestClient(app)
    if username:
        r = c.post("/api/login", json={"username": username, "password": PASSWORD,
                                       "agency": USERS.get(username, ("north",))[0]})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        if not fresh:
            _CLIENTS[id(app), username] = c
    return c


def probe(subject: str, image: str = "Img_03.jpg"):
    path = require_data("frmdb-dev", "cctv_crops", subject, image)
    return ("images", (path.name, path.read_bytes(), "image/jpeg"))


def search(c: TestClient, subject: str, **form):
    data = {"case": "OP-NORTH-1", "reason": "robbery at the harbour, CCTV still", "top": "20", **form}
    return c.post("/api/searches", files=[probe(subject)], data=data)


def subjects_of(doc: dict) -> set[str]:
    return {cand["subject"] for p in doc["probes"] for cand in p["subjects"]}


@pytest.fixture(scope="module")
def north_search(service):
    app, _ = service
    r = search(client(app, "nina"), "041")
    assert r.status_code == 201, r.text
    return r.json()


def test_search_ranks_only_own_collection_and_reports_only_its_size(service, north_search):
    found = subjects_of(north_search)
    assert found and found <= set(NORTH), found
    assert north_search["gallery_subjects"] == len(NORTH)  # never the other agency's count
    assert "image_path" not in north_search["probes"][0]["subjects"][0]


def calibrated_search(app, monkeypatch, subject: str) -> dict:
    """nina's search of ``subject``'s CCTV still while the service uses the committed dev calibration."""
    library = app.state.fm.fm
    monkeypatch.setattr(library, "settings", library.settings.replace(
        calibration_file=REPO / "docs" / "calibration-dev.json"))
    r = search(client(app, "nina"), subject)
    assert r.status_code == 201, r.text
    return r.json()


def test_calibrated_results_page_says_how_often_the_bands_held_an_enrolled_person(service, monkeypatch):
    """With a calibration that kept its mated side, the page and the API say what an empty band does not mean."""
    from markupsafe import escape

    app, _ = service
    doc = calibrated_search(app, monkeypatch, "041")
    possible = doc["bands"]["bands"][1]
    assert possible["band"] == "possible" and [m["source"] for m in possible["mated_reach"]] == [
        "frmdb-dev-cctv", "lfw-pair-images"]
    summary = reach_summary(doc["bands"]["bands"])
    assert summary[0].startswith("frmdb-dev-cctv (104 mated comparisons): strong ")
    nina = client(app, "nina", fresh=True)
    opened = nina.get(f"/searches/{doc['search_id']}", follow_redirects=False)
    assert opened.status_code == 303
    page = nina.get(opened.headers["location"])
    assert page.status_code == 200 and 'id="p1-custody-1"' in page.text
    assert f"{escape(REACH_HEADING)}: {escape('; '.join(summary))}." in page.text
    (own,) = reach_summary(doc["bands"]["bands"], doc["probes"][0]["quality_score"])  # this probe's quality bin
    assert own.startswith("frmdb-dev-cctv, probe quality ")
    assert escape(f"searches with probes of this quality reached: {own}.") in page.text


def test_probe_of_other_agencys_subject_finds_nothing_of_theirs(service):
    app, _ = service
    r = search(client(app, "nina"), "047")
    assert r.status_code == 201
    assert subjects_of(r.json()) <= set(NORTH)


def test_shared_collection_appears_only_while_agreement_valid(service):
    app, fm = service
    nina, adam, sara = client(app, "nina"), client(app, "adam"), client(app, "sara")
    grant = {"collection": "south-custody", "agency": "north", "reason": "joint operation HARBOUR"}
    assert adam.post("/api/admin/shares", json=grant).status_code == 404  # not north's collection
    share = sara.post("/api/admin/shares", json=grant)
    assert share.status_code == 201
    share_id = share.json()["id"]
    with_share = search(nina, "047").json()
    assert subjects_of(with_share) & set(SOUTH)
    assert with_share["gallery_subjects"] == 12
    assert [s["direction"] for s in adam.get("/api/admin/shares").json() if s["id"] == share_id] == ["received"]
    because = {"reason": "operation closed"}
    assert adam.request("DELETE", f"/api/admin/shares/{share_id}", json=because).status_code == 404  # grantee
    assert sara.request("DELETE", f"/api/admin/shares/{share_id}", json={}).status_code == 422  # no reason
    assert sara.request("DELETE", f"/api/admin/shares/{share_id}", json=because).status_code == 200
    assert subjects_of(search(nina, "047").json()) <= set(NORTH)
    expired = sara.post("/api/admin/shares", json={**grant, "until": "2000-01-01"})
    assert expired.status_code == 201
    assert subjects_of(search(nina, "047").json()) <= set(NORTH)
    revoked = [e for e in fm.audit(limit=50, reason="test: check the revocation was recorded")
               if e["action"] == "share.revoke" and e["details"]["share_id"] == share_id]
    assert [(e["actor"], e["details"]["reason"]) for e in revoked] == [(who("sara"), "operation closed")]


def test_other_agency_cannot_read_review_decide_or_see_images(service, north_search):
    app, _ = service
    sam = client(app, "sam")
    sid = north_search["search_id"]
    face_id = north_search["probes"][0]["subjects"][0]["face_id"]
    assert sam.get(f"/api/searches/{sid}").status_code == 404
    assert sam.post(f"/api/searches/{sid}/decisions", json={"probe": 1, "rank": 1, "decision": "not a match",
                                                            "note": "x"}).status_code == 404
    assert sam.get(f"/api/searches/{sid}/probes/1/face.jpg").status_code == 404
    assert sam.get(f"/api/faces/{face_id}/face.jpg").status_code == 404
    why = {"X-Reason": "checking another agency's search"}
    for url in (f"/api/searches/{sid}", f"/api/searches/{sid}/probes/1/face.jpg", f"/api/faces/{face_id}/face.jpg"):
        assert sam.get(url, headers=why).status_code == 404, url  # a stated reason opens nothing of theirs
        assert sam.get(url, params={"consultation": north_search["consultation"]}).status_code == 404, url
        assert sam.get(url, params={"consultation": north_search["consultation_entry"]}).status_code == 404, url
    assert all(e["actor"].endswith("@south") for e in sam.get("/api/audit", headers=AUDIT).json())
    assert sid not in [s["id"] for s in sam.get("/api/searches").json()]
    assert sam.get("/api/queue").json() == [] or all(q["search_id"] != sid for q in sam.get("/api/queue").json())


AUDIT = {"X-Reason": "monthly supervision of searches"}
ROLE_MATRIX = [  # (method, path template, allowed users, forbidden users); anyone else: 404 (another agency's)
    ("GET", "/api/me", set(USERS), set()),
    ("GET", "/api/searches", {"nina", "rita", "ravi", "sue", "sam"}, {"otto", "adam", "sara"}),
    ("GET", "/api/tokens", set(USERS), set()),
    ("GET", "/api/searches/{sid}", {"nina", "rita", "ravi", "sue"}, {"otto", "adam", "sara"}),
    ("GET", "/api/searches/{sid}/probes/1/face.jpg", {"nina", "rita", "ravi", "sue"}, {"otto", "adam", "sara"}),
    ("GET", "/api/faces/{fid}/face.jpg", {"nina", "rita", "ravi", "sue"}, {"otto", "adam", "sara"}),
    ("GET", "/api/queue", {"rita", "ravi", "sam"}, {"nina", "sue", "otto", "adam", "sara"}),
    ("GET", "/api/audit", {"sue", "sam"}, {"nina", "rita", "ravi", "otto", "adam", "sara"}),
    ("GET", "/api/audit?format=csv", {"sue", "sam"}, {"nina", "rita", "ravi", "otto", "adam", "sara"}),
    ("GET", "/api/admin/shares", ADMINS, set(USERS) - ADMINS),
    ("GET", "/api/admin/agencies", ADMINS, set(USERS) - ADMINS),
    ("GET", "/api/admin/users", ADMINS, set(USERS) - ADMINS),
    ("GET", "/api/admin/users/nina/tokens", {"adam"}, set(USERS) - ADMINS),  # sara: 404, not her agency's
    ("GET", "/api/admin/users/sam/tokens", {"sara"}, set(USERS) - ADMINS),
    ("GET", "/api/ingest/999", set(), {"nina", "rita", "ravi", "sue", "adam", "sara"}),
    ("GET", "/api/ingest", {"otto", "sam"}, {"nina", "rita", "ravi", "sue", "adam", "sara"}),
]
#: the reason every request of the role matrix states (header X-Reason: a reason never goes in a URL)
MATRIX_WHY = {"X-Reason": "role matrix check"}

#: Admin writes: (method, path, JSON body) for a user of north; north's admin may, south's gets 404, others 403.
ADMIN_WRITES = [
    ("PUT", "/api/admin/users/nina/roles", {"roles": ["investigator"], "reason": ADMIN_WHY}),
    ("POST", "/api/admin/users/nina/enable", {"reason": ADMIN_WHY}),
    ("GET", "/api/admin/users/nina/tokens", None),
]


@pytest.mark.parametrize("method,path,allowed,forbidden", ROLE_MATRIX)
def test_role_matrix(service, north_search, method, path, allowed, forbidden):
    app, _ = service
    url = path.format(sid=north_search["search_id"], fid=north_search["probes"][0]["subjects"][0]["face_id"])
    assert TestClient(app).request(method, url, headers=MATRIX_WHY).status_code == 401
    for name in USERS:
        status = client(app, name).request(method, url, headers=MATRIX_WHY).status_code
        if name in allowed:
            expected = {200}
        elif name in forbidden:
            expected = {403}
        else:
            expected = {404}  # the right role, another agency's (or no such) resource
        assert status in expected, f"{name} {method} {url}: {status}"


def test_role_matrix_for_writes(service, north_search):
    app, _ = service
    sid = north_search["search_id"]
    decision = {"probe": 1, "rank": 2, "decision": "inconclusive", "note": "profile view only"}
    assert client(app, "nina").post(f"/api/searches/{sid}/decisions", json=decision).status_code == 403
    assert search(client(app, "rita"), "041").status_code == 403
    new_user = {"username": "eve", "password": PASSWORD, "roles": ["admin"], "reason": ADMIN_WHY}
    for name in set(USERS) - ADMINS:
        assert client(app, name).post("/api/admin/users", json=new_user).status_code == 403, name
        assert client(app, name).post("/api/admin/shares", json={"collection": "north-custody", "agency": "south",
                                                                 "reason": ADMIN_WHY}).status_code == 403, name
    for method, path, body in ADMIN_WRITES:
        assert client(app, "nina").request(method, path, json=body).status_code == 403
        assert client(app, "sara").request(method, path, json=body).status_code == 404, path
        assert client(app, "adam").request(method, path, json=body).status_code == 200, path
    assert client(app, "adam").post("/api/admin/agencies", data={"name": "east"}).status_code == 405  # CLI only
    assert client(app, "nina").post("/api/ingest", data={"folder": "/"}).status_code == 403
    assert client(app, "otto").post("/api/ingest", data={"folder": "/etc"}).status_code == 403  # not an ingest root
    assert TestClient(app).post("/api/searches", data={"case": "x", "reason": "y"}).status_code == 401


def test_session_needs_csrf_for_writes(service, north_search):
    app, _ = service
    c = client(app, "rita", fresh=True)
    del c.headers["X-CSRF-Token"]
    decision = {"probe": 1, "rank": 3, "decision": "not a match", "note": "different ears"}
    assert c.post(f"/api/searches/{north_search['search_id']}/decisions", json=decision).status_code == 403


def test_bearer_token_works_and_is_revocable(service):
    app, _ = service
    made = client(app, "nina", fresh=True).post("/api/tokens", data={"label": "script"}).json()
    bearer = TestClient(app, headers={"Authorization": f"Bearer {made['token']}"})
    assert bearer.get("/api/me").json()["user"] == "nina@north"
    assert bearer.delete(f"/api/tokens/{made['id']}").status_code == 200
    assert bearer.get("/api/me").status_code == 401


WHY = {"X-Reason": "two-person review of the candidates"}


def test_two_person_review_blind_then_lead(service, north_search):
    app, fm = service
    sid = north_search["search_id"]
    rita, ravi = client(app, "rita"), client(app, "ravi")
    first = {"probe": 1, "rank": 1, "decision": "possible match", "note": "same scar above left eye"}
    assert rita.post(f"/api/searches/{sid}/decisions", json={**first, "note": " "}).status_code == 422
    assert rita.post(f"/api/searches/{sid}/decisions", json=first).status_code == 201
    assert rita.post(f"/api/searches/{sid}/decisions", json=first).status_code == 409  # not twice by one person
    seen = ravi.get(f"/api/searches/{sid}", headers=WHY).json()["probes"][0]["subjects"][0]["review"]
    assert seen["reviews"] == [] and seen["hidden_reviews"] == 1 and seen["outcome"] == "awaiting second review"
    assert any(q["rank"] == 1 and q["awaiting"] == "second review" for q in ravi.get("/api/queue").json())
    assert ravi.post(f"/api/searches/{sid}/decisions", json={**first, "note": "agree: ear shape"}).status_code == 201
    seen = rita.get(f"/api/searches/{sid}", headers=WHY).json()["probes"][0]["subjects"][0]["review"]
    assert seen["outcome"] == "investigative lead" and len(seen["reviews"]) == 2
    actions = [e["action"] for e in client(app, "sue").get("/api/audit", headers=AUDIT).json()]
    assert "review.first" in actions and "review.second" in actions
    assert "text/csv" in client(app, "sue").get("/api/audit", params={"format": "csv"}, headers=AUDIT).headers["content-type"]


def test_disagreement_is_kept(service, north_search):
    app, _ = service
    sid = north_search["search_id"]
    one = {"probe": 1, "rank": 4, "decision": "possible match", "note": "similar nose"}
    assert client(app, "rita").post(f"/api/searches/{sid}/decisions", json=one).status_code == 201
    assert client(app, "ravi").post(f"/api/searches/{sid}/decisions",
                                    json={**one, "decision": "not a match", "note": "jaw differs"}).status_code == 201
    review = client(app, "rita").get(f"/api/searches/{sid}", headers=WHY).json()["probes"][0]["subjects"][3]["review"]
    assert review["outcome"] == "disagreement" and [r["decision"] for r in review["reviews"]] == [
        "possible match", "not a match"]


def test_uploads_are_sniffed_and_limited(service, tmp_path):
    app, _ = service
    nina = client(app, "nina")
    pdf = ("images", ("still.jpg", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "image/jpeg"))
    r = nina.post("/api/searches", files=[pdf], data={"case": "C", "reason": "R"})
    assert r.status_code == 415 and "PDF" in r.json()["error"]
    r = nina.post("/api/searches", files=[probe("041")], data={"case": "C"})
    assert r.status_code == 422 and "reason" in r.json()["error"]
    small = create_app(service[1].settings, ServiceSettings(max_upload_bytes=1000), web=False)
    r = client(small, "nina").post("/api/searches", files=[probe("041")], data={"case": "C", "reason": "R"})
    assert r.status_code == 413
    r = nina.post("/api/searches", files=[probe("041")], data={"case": "C", "reason": "R", "boxes": "1,2,x"})
    assert r.status_code == 422


def test_rate_limit_per_user(service):
    app, fm = service
    limited = create_app(fm.settings, ServiceSettings(searches_per_minute=1), web=False)
    nina = client(limited, "nina")
    assert search(nina, "041").status_code == 201
    r = search(nina, "041")
    assert r.status_code == 429 and r.headers["Retry-After"]


def test_errors_are_json_without_traces(service):
    app, _ = service
    r = client(app, "nina").get("/api/searches/abc")
    assert r.status_code == 422 and "Traceback" not in r.text
    assert TestClient(app).post("/api/login", json={"username": "nina@north", "password": "wrong"}).status_code == 401


def test_operator_ingests_a_server_folder_with_progress(service, tmp_path, monkeypatch):
    app, fm = service
    from facematch.ingest import bulk

    in_web_process = []  # the analysis must run in the job's own process, never in the web process

    def analysed_here(*args):
        in_web_process.append(args)
        raise RuntimeError("analysed in the web process")

    monkeypatch.setattr(bulk, "analyse_job", analysed_here)
    otto = client(app, "otto")
    job = otto.post("/api/ingest", data={"folder": str(app.state.ingest_root)})
    assert job.status_code == 202, job.text
    import time
    for _ in range(600):
        state = otto.get(f"/api/ingest/{job.json()['id']}").json()
        if state["state"] != "running":
            break
        time.sleep(0.5)
    assert state["state"] == "finished", state
    assert state["summary"]["total"] == 2 and state["done"] == 2 and not in_web_process
    assert client(app, "sam").get(f"/api/ingest/{job.json()['id']}").status_code == 404
    listed = otto.get("/api/ingest").json()  # the ingest page's live list: the agency's jobs, newest first
    assert listed[0]["id"] == job.json()["id"] and listed[0]["state"] == "finished"
    assert job.json()["id"] not in [j["id"] for j in client(app, "sam").get("/api/ingest").json()]
    north = fm.accounts.collection("north-custody")["id"]
    owned = fm.catalogue.conn.execute("SELECT COUNT(*) FROM image_owners o JOIN images i ON i.id = o.image_id "
                                      "JOIN subjects s ON s.id = i.subject_id WHERE s.reference = '052' "
                                      "AND o.collection_id = ?", (north,)).fetchone()[0]
    assert owned == 2


def admin_audit(fm, action: str) -> list[dict]:
    return [e for e in fm.audit(action=action, limit=200, reason="test: check the admin change was recorded")]


def test_agency_admin_manages_own_users_and_tokens(service):
    app, fm = service
    adam = client(app, "adam")
    made = adam.post("/api/admin/users", json={"username": "nora", "password": PASSWORD, "roles": ["investigator"],
                                               "reason": "joined the north intelligence unit"})
    assert made.status_code == 201, made.text
    assert made.json() == {"user": "nora", "recorded_as": "nora@north", "agency": "north", "roles": ["investigator"]}
    assert adam.post("/api/admin/users", json={"username": "nell", "password": PASSWORD, "roles": ["reviewer"],
                                               "reason": " "}).status_code == 422  # a reason is required
    nora = client(app, "nora", fresh=True)
    assert nora.get("/api/searches").status_code == 200
    r = adam.put("/api/admin/users/nora/roles", json={"roles": ["reviewer", "bogus"], "reason": ADMIN_WHY})
    assert r.status_code == 422
    assert adam.put("/api/admin/users/nora/roles", json={"roles": ["reviewer"], "reason": ADMIN_WHY}).json()["roles"] == [
        "reviewer"]
    assert nora.get("/api/queue").status_code == 200  # roles are read per request
    assert search(nora, "041").status_code == 403

    issued = adam.post("/api/admin/users/nora/tokens", json={"label": "batch script", "reason": ADMIN_WHY})
    assert issued.status_code == 201
    bearer = TestClient(app, headers={"Authorization": f"Bearer {issued.json()['token']}"})
    assert bearer.get("/api/me").json()["user"] == "nora@north"
    listed = adam.get("/api/admin/users/nora/tokens").json()
    assert [t["label"] for t in listed] == ["batch script"] and "token" not in listed[0]
    r = adam.request("DELETE", f"/api/admin/tokens/{issued.json()['id']}", json={"reason": "script retired"})
    assert r.status_code == 200
    assert bearer.get("/api/me").status_code == 401

    second = adam.post("/api/admin/users/nora/tokens", json={"label": "second", "reason": ADMIN_WHY}).json()
    r = adam.post("/api/admin/users/nora/disable", json={"reason": "left the unit"})
    assert r.status_code == 200 and r.json()["sessions_ended"] == 1 and r.json()["tokens_revoked"] == 1
    assert nora.get("/api/me").status_code == 401
    assert TestClient(app, headers={"Authorization": f"Bearer {second['token']}"}).get("/api/me").status_code == 401
    assert TestClient(app).post("/api/login", json={"username": "nora", "password": PASSWORD,
                                                    "agency": "north"}).status_code == 401
    assert {"username": "nora", "active": False}.items() <= next(
        u for u in adam.get("/api/admin/users").json() if u["username"] == "nora").items()
    assert adam.post("/api/admin/users/nora/enable", json={"reason": "back from secondment"}).status_code == 200
    assert client(app, "nora", fresh=True).get("/api/me").status_code == 200

    for action, reason in [("admin.user_add", "joined the north intelligence unit"), ("admin.user_roles", ADMIN_WHY),
                           ("admin.token_revoke", "script retired"), ("admin.user_disable", "left the unit")]:
        entries = [e for e in admin_audit(fm, action) if e["details"].get("user") == "nora@north"]
        assert [(e["actor"], e["details"]["reason"]) for e in entries] == [(who("adam"), reason)], action
    why = {"X-Reason": "check the admin changes"}
    seen = {e["action"] for e in client(app, "sue").get("/api/audit", headers=why).json() if e["actor"] == who("adam")}
    assert {"admin.user_add", "admin.user_disable", "admin.token_create"} <= seen  # north's supervisor sees them
    assert not any(e["actor"] == who("adam") for e in client(app, "sam").get("/api/audit", headers=why).json())


def test_agency_admin_never_reaches_another_agency(service):
    app, _ = service
    adam, sara = client(app, "adam"), client(app, "sara")
    sams_token = client(app, "sam", fresh=True).post("/api/tokens", data={"label": "own"}).json()
    because = {"reason": ADMIN_WHY}
    assert adam.put("/api/admin/users/sam/roles", json={"roles": ["admin"], "reason": ADMIN_WHY}).status_code == 404
    assert adam.post("/api/admin/users/sam/disable", json=because).status_code == 404
    assert adam.get("/api/admin/users/sam/tokens").status_code == 404
    assert adam.post("/api/admin/users/sam/tokens", json={"label": "x", "reason": ADMIN_WHY}).status_code == 404
    assert adam.request("DELETE", f"/api/admin/tokens/{sams_token['id']}", json=because).status_code == 404
    r = adam.post("/api/admin/users", json={"username": "mole", "password": PASSWORD, "roles": ["investigator"],
                                            "agency": "south", "reason": ADMIN_WHY})
    assert r.status_code == 404
    assert client(app, "sam").get("/api/me").json()["roles"] == ["investigator", "operator", "reviewer", "supervisor"]
    bearer = TestClient(app, headers={"Authorization": f"Bearer {sams_token['token']}"})
    assert bearer.get("/api/me").status_code == 200  # adam's attempts changed nothing
    listed = {u["username"] for u in adam.get("/api/admin/users").json()}
    assert listed >= {"nina", "adam"} and not listed & {"sam", "sara"}
    assert {s["owner"] for s in sara.get("/api/admin/shares").json() if s["direction"] == "granted"} <= {"south"}
    assert adam.get("/api/admin/agencies").json()["collections"] == ["north-custody"]
    # an agency never loses its last active admin
    assert adam.put("/api/admin/users/adam/roles", json={"roles": ["supervisor"], "reason": ADMIN_WHY}).status_code == 409
    assert adam.post("/api/admin/users/adam/disable", json=because).status_code == 409
    assert client(app, "adam").get("/api/admin/users").status_code == 200


def test_admin_page_shows_and_changes_only_own_agency(service):
    app, fm = service
    adam, sara = client(app, "adam"), client(app, "sara")
    page = adam.get("/admin")
    assert page.status_code == 200 and ">nina<" in page.text and ">sam<" not in page.text and ">sara<" not in page.text
    assert ">adam<" not in sara.get("/admin").text
    assert client(app, "nina").get("/admin", headers={"Accept": "text/html"}).status_code == 403
    r = adam.post("/admin/users", data={"username": "nell", "password": PASSWORD, "roles": ["reviewer", "supervisor"],
                                        "reason": "new reviewer"}, follow_redirects=False)
    assert r.status_code == 303 and ">nell<" in adam.get("/admin").text
    assert client(app, "nell").get("/api/queue").status_code == 200
    r = adam.post("/admin/users/nell/disable", data={"reason": "suspended pending inquiry"}, follow_redirects=False)
    assert r.status_code == 303 and "disabled" in adam.get("/admin").text
    assert client(app, "nell").get("/api/queue").status_code == 401
    assert adam.post("/admin/users/nell/enable", data={"reason": "inquiry closed"}, follow_redirects=False
                     ).status_code == 303
    assert adam.post("/admin/users/sam/disable", data={"reason": "x"}).status_code == 404
    assert adam.post("/admin/shares", data={"collection": "north-custody", "agency": "south", "until": "",
                                            "reason": ""}).status_code == 422
    assert client(app, "sam").get("/api/me").status_code == 200
    entries = [e for e in admin_audit(fm, "admin.user_disable") if e["details"]["user"] == "nell@north"]
    assert [(e["actor"], e["details"]["reason"]) for e in entries] == [(who("adam"), "suspended pending inquiry")]


def _wait(c: TestClient, job_id: int) -> dict:
    import time
    for _ in range(600):
        state = c.get(f"/api/ingest/{job_id}").json()
        if state["state"] != "running":
            return state
        time.sleep(0.5)
    raise AssertionError(f"ingest job {job_id} still running: {state}")


LOOK = {"X-Reason": "compare the crime-scene face"}


def scene_faces(doc: dict) -> list[dict]:
    return [cand for p in doc["probes"] for cand in p["scene_faces"]]


def test_operator_ingests_crime_scene_images_for_own_agency_only(service):
    app, fm = service
    otto, sam = client(app, "otto"), client(app, "sam")
    assert client(app, "nina").post("/api/ingest/scene", data={"case": "OP-HARBOUR",
                                                               "folder": str(app.state.scene_root)}).status_code == 403
    assert otto.post("/api/ingest/scene", data={"case": "OP-HARBOUR", "folder": "/etc"}).status_code == 403
    assert otto.post("/api/ingest/scene", data={"case": "OP-HARBOUR"}).status_code == 422
    job = otto.post("/api/ingest/scene", data={"case": "OP-HARBOUR", "folder": str(app.state.scene_root)})
    assert job.status_code == 202, job.text
    assert job.json()["kind"] == "scene" and job.json()["case"] == "OP-HARBOUR"
    state = _wait(otto, job.json()["id"])
    assert state["state"] == "finished", state
    assert state["summary"]["total"] == 2 and state["done"] == 2 and state["summary"]["faces_stored"] >= 2, state
    assert sam.get(f"/api/ingest/{job.json()['id']}").status_code == 404
    assert "case OP-HARBOUR: finished 2/2" in otto.get("/ingest").text
    assert "OP-HARBOUR" not in sam.get("/ingest").text
    owners = fm.catalogue.conn.execute("""SELECT DISTINCT a.name FROM image_owners o JOIN cases k ON k.id = o.case_id
        JOIN agencies a ON a.id = k.agency_id JOIN images i ON i.id = o.image_id WHERE i.run_id = ?""",
                                       (state["summary"]["run_id"],)).fetchall()
    assert [r[0] for r in owners] == ["north"]

    # north's investigator searching another still of 043 sees the scene faces of north's case
    north = search(client(app, "nina"), "043", case="OP-HARBOUR").json()
    found = [c for c in scene_faces(north) if c["case_ref"] == "OP-HARBOUR"]
    assert found, north["probes"][0]["scene_faces"]
    scene_face = f"/api/faces/{found[0]['face_id']}/face.jpg"
    assert client(app, "nina").get(scene_face, headers=LOOK).status_code == 200
    # south sees nothing of it: not in its search, not its face images, not its cases
    south = sam.post("/api/searches", files=[probe("043")], data={"case": "OP-HARBOUR", "reason": "same still",
                                                                  "top": "20"})
    assert south.status_code == 201
    assert not {c["face_id"] for c in scene_faces(south.json())} & {c["face_id"] for c in found}
    assert sam.get(scene_face, headers=LOOK).status_code == 404


def test_uploaded_scene_images_join_the_uploading_agencys_case(service):
    """South uploads a still of 043 (a north subject) for its own OP-HARBOUR: north's case of the same name,
    searches and face images never show it, and south's never show north's."""
    app, fm = service
    sam, nina = client(app, "sam"), client(app, "nina")
    still = require_data("frmdb-dev", "cctv_crops", "043", "Img_05.jpg")
    job = sam.post("/api/ingest/scene", data={"case": "OP-HARBOUR"},
                   files=[("files", (still.name, still.read_bytes(), "image/jpeg"))])
    assert job.status_code == 202, job.text
    state = _wait(sam, job.json()["id"])
    assert state["state"] == "finished" and state["summary"]["faces_stored"] == 1, state
    rows = fm.catalogue.conn.execute("""SELECT f.id, a.name FROM faces f JOIN images i ON i.id = f.image_id
        JOIN image_owners o ON o.image_id = i.id JOIN cases k ON k.id = o.case_id
        JOIN agencies a ON a.id = k.agency_id WHERE i.run_id = ?""", (state["summary"]["run_id"],)).fetchall()
    assert [r[1] for r in rows] == ["south"]  # south's own OP-HARBOUR, whatever north calls its cases
    face_id = rows[0][0]
    assert sam.get(f"/api/faces/{face_id}/face.jpg", headers=LOOK).status_code == 200
    assert nina.get(f"/api/faces/{face_id}/face.jpg", headers=LOOK).status_code == 404
    south = sam.post("/api/searches", files=[probe("043")], data={"case": "OP-HARBOUR", "reason": "harbour still",
                                                                  "top": "20"})
    assert face_id in {c["face_id"] for c in scene_faces(south.json())}, south.json()["probes"][0]["scene_faces"]
    north = search(nina, "043", case="OP-HARBOUR").json()
    assert face_id not in {c["face_id"] for c in scene_faces(north)}
    assert {c["case_ref"] for c in scene_faces(north)} <= {"OP-HARBOUR"}  # at most north's own case


def _children(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                found.add(int(status.parent.name))
        except OSError:
            pass
    return found


def _running(pid: int) -> bool:
    """Still a live Python process (not a zombie, not gone)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text() and \
            b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads child processes from /proc")
def test_serve_stops_its_worker_processes_on_sigterm(tmp_path):
    """systemd stops a service with SIGTERM: the search workers (models loaded) must end with the server."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "facematch", "--data-dir", str(tmp_path / "data"), "--index-dir",
                               str(tmp_path / "indexes"), "serve", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: set[int] = set()
    try:
        for _ in range(240):
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200
                break
            except httpx.HTTPError:
                assert server.poll() is None, "the server exited before answering"
                time.sleep(0.5)
        children = _children(server.pid)
        assert children, "a worker process"
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 128 + signal.SIGTERM
        for _ in range(60):
            alive = {pid for pid in children if _running(pid)}
            if not alive:
                break
            time.sleep(0.5)
        assert not alive, f"worker processes {sorted(alive)} outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _entries(fm, action: str) -> list[dict]:
    return fm.catalogue.audit_entries(action=action, limit=10_000)


def test_consultations_need_the_users_own_reason_and_record_it(service, north_search):
    """DPA 2018 s.62: each view of a search, its images and the audit log records who, when and why."""
    app, fm = service
    sid = north_search["search_id"]
    nina, rita, ravi, sue = (client(app, n) for n in ("nina", "rita", "ravi", "sue"))
    r = rita.get(f"/api/searches/{sid}")
    assert r.status_code == 422 and "X-Reason" in r.json()["error"]
    assert rita.get(f"/api/searches/{sid}", headers={"X-Reason": "  "}).status_code == 422

    own = nina.get(f"/api/searches/{sid}")  # the author: recorded with the case and the search's justification
    assert own.status_code == 200
    entry = _entries(fm, "review")[0]
    assert entry["id"] == own.json()["consultation_entry"] and entry["actor"] == who("nina")
    assert entry["details"] == {"search_id": sid, "reason_stated": False, "reason":
                                "own search in case OP-NORTH-1; its justification: robbery at the harbour, CCTV still"}

    doc = rita.get(f"/api/searches/{sid}", headers={"X-Reason": "first review, queue item"}).json()
    entry = _entries(fm, "review")[0]
    assert (entry["id"], entry["actor"], entry["details"]) == (
        doc["consultation_entry"], who("rita"), {"search_id": sid, "reason": "first review, queue item"})
    assert str(doc["consultation_entry"]) not in doc["consultation"]  # a session's id is opaque
    cand = doc["probes"][0]["subjects"][0]
    views = len(_entries(fm, "view.image"))
    assert rita.get(cand["face_url"]).status_code == 200  # inside her consultation: no new entry
    assert rita.get(doc["probes"][0]["face_url"]).status_code == 200
    assert len(_entries(fm, "view.image")) == views
    assert rita.get(f"/api/searches/{sid}", params={"consultation": doc["consultation"]}).status_code == 200
    assert _entries(fm, "review")[0]["id"] == doc["consultation_entry"]
    assert rita.get(f"/api/searches/{sid}", params={"consultation": doc["consultation_entry"]}).status_code == 422
    assert ravi.get(cand["face_url"]).status_code == 422  # someone else's consultation covers nothing
    shown = {c["face_id"] for c in doc["probes"][0]["subjects"]}
    other = fm.catalogue.conn.execute(  # a face rita may see, but not one this search shows
        f"SELECT f.id FROM faces f JOIN subjects s ON s.id = f.subject_id WHERE s.reference = ? "
        f"AND f.id NOT IN ({','.join('?' * len(shown))})", (cand["subject"], *shown)).fetchone()[0]
    assert rita.get(f"/api/faces/{other}/face.jpg", params={"consultation": doc["consultation"]}).status_code == 422
    assert rita.get(f"/api/faces/{other}/face.jpg", headers={"X-Reason": "other views of the candidate"}).status_code == 200
    assert ravi.get(f"/api/searches/{sid}", params={"consultation": doc["consultation"]}).status_code == 422
    bare = f"/api/faces/{cand['face_id']}/face.jpg"
    assert ravi.get(bare).status_code == 422
    assert ravi.get(bare, headers={"X-Reason": "compare with the custody photo"}).status_code == 200
    seen = _entries(fm, "view.image")[0]
    assert (seen["actor"], seen["details"]) == (who("ravi"), {"face_id": cand["face_id"],
                                                         "reason": "compare with the custody photo"})

    assert sue.get("/api/audit").status_code == 422
    assert sue.get("/api/audit", params={"format": "csv"}).status_code == 422
    assert sue.get("/api/audit", headers={"X-Reason": "complaint 2026/14 about a search"}).status_code == 200
    read = _entries(fm, "audit.read")[0]
    assert read["actor"] == who("sue") and read["details"]["reason"] == "complaint 2026/14 about a search"


def test_a_reason_in_a_query_string_is_refused_and_not_recorded(service, north_search):
    """Access logs keep URLs: ``reason`` in a query string answers 400 (pointing to X-Reason) on every route
    that reads one, API and web page alike, and nothing of it reaches the audit log."""
    app, fm = service
    sid, face_id = north_search["search_id"], north_search["probes"][0]["subjects"][0]["face_id"]
    sha = fm.catalogue.conn.execute("SELECT sha256 FROM search_probes WHERE search_id = ?", (sid,)).fetchone()[0]
    rita, sue = client(app, "rita"), client(app, "sue")
    before = fm.catalogue.conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
    for who, url in ((rita, f"/api/searches/{sid}"), (rita, f"/api/searches/{sid}/probes/1/face.jpg"),
                     (rita, f"/api/faces/{face_id}/face.jpg"), (rita, f"/api/probes/{sha}"),
                     (sue, "/api/audit"), (sue, "/api/audit?format=csv")):
        r = who.get(url, params={"reason": "a secret justification"})
        assert r.status_code == 400 and "X-Reason" in r.json()["error"], (url, r.text)
        r = who.get(url, params={"reason": "a secret justification"}, headers={"X-Reason": "stated properly"})
        assert r.status_code == 400, url  # not even beside the header: the URL has already been logged
    page = rita.get(f"/searches/{sid}", params={"reason": "a secret justification"}, headers={"Accept": "text/html"})
    assert page.status_code == 400 and 'id="consultform"' in page.text and 'method="post"' in page.text
    page = sue.get("/audit", params={"reason": "a secret justification"}, headers={"Accept": "text/html"})
    assert page.status_code == 400 and 'id="auditreason"' in page.text and 'id="audit"' not in page.text
    new = fm.catalogue.conn.execute("SELECT details FROM audit_log WHERE id > ?", (before,)).fetchall()
    assert not any("a secret justification" in r[0] or "stated properly" in r[0] for r in new)


def _csrf(page_html: str) -> str:
    import re
    return re.search(r'name="csrf_token" value="([^"]+)"', page_html).group(1)


def test_web_consultation_posts_the_reason_and_its_id_is_bound_to_user_and_session(service, north_search):
    """The reason form POSTs (CSRF-checked); the server records it and redirects (303) to a same-site path
    whose opaque id opens the page and its images for this user in this session only."""
    app, fm = service
    sid = north_search["search_id"]
    rita, ravi = client(app, "rita", fresh=True), client(app, "ravi", fresh=True)
    form = rita.get(f"/searches/{sid}")
    assert form.status_code == 200 and 'id="consultform"' in form.text and 'method="post"' in form.text
    entries = len(_entries(fm, "review"))
    csrf = rita.headers.pop("X-CSRF-Token")
    assert rita.post(f"/searches/{sid}/consult", data={"reason": "second look"}).status_code == 403  # no CSRF
    assert rita.post(f"/searches/{sid}/consult", data={"reason": " ", "csrf_token": csrf}).status_code == 422
    assert client(app, "sam").post(f"/searches/{sid}/consult", data={"reason": "x"}).status_code == 404
    assert client(app, "otto").post(f"/searches/{sid}/consult", data={"reason": "x"}).status_code == 403
    assert len(_entries(fm, "review")) == entries
    r = rita.post(f"/searches/{sid}/consult", follow_redirects=False,
                  data={"reason": "queue item: first review of the harbour still", "csrf_token": csrf,
                        "next": "https://evil.example/", "c": "//evil.example"})
    assert r.status_code == 303
    target = r.headers["location"]
    assert target.startswith(f"/searches/{sid}?c=") and "reason" not in target and "harbour" not in target
    assert not target.startswith("//") and "evil" not in target
    entry = _entries(fm, "review")[0]
    assert (entry["actor"], entry["details"]) == (who("rita"), {"search_id": sid,
                                                           "reason": "queue item: first review of the harbour still"})
    assert str(entry["id"]) not in target.split("?c=")[1]  # opaque: not the entry id
    page = rita.get(target)
    assert page.status_code == 200 and 'id="p1-custody-1"' in page.text
    import re
    images = re.findall(r'<img src="([^"]+)"', page.text)
    assert images and all(rita.get(src.replace("&amp;", "&")).status_code == 200 for src in images)
    assert len(_entries(fm, "review")) == entries + 1  # the page and its images: one consultation

    foreign = ravi.get(target)  # another user cannot reuse it: he is asked for his own reason
    assert foreign.status_code == 422 and 'id="consultform"' in foreign.text and 'id="p1-custody-1"' not in foreign.text
    assert ravi.get(images[0].replace("&amp;", "&")).status_code == 422
    tampered = target[:-2] + ("AA" if not target.endswith("AA") else "BB")
    assert rita.get(tampered).status_code == 422
    decide = {"probe": "1", "rank": "6", "decision": "inconclusive", "note": "profile only", "csrf_token": csrf,
              "c": "//evil.example/x"}
    assert rita.post(f"/searches/{sid}/decide", data=decide).status_code == 422  # no foreign id into a redirect
    r = rita.post(f"/searches/{sid}/decide", data={**decide, "c": target.split("?c=")[1]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(target + "#p1-custody-6")

    assert rita.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    again = client(app, "rita", fresh=True)  # the same user after logging out: a new session
    assert again.get(target).status_code == 422 and 'id="p1-custody-1"' not in again.get(target).text
    assert again.get(images[0].replace("&amp;", "&")).status_code == 422
    assert len(_entries(fm, "review")) == entries + 1

    nina = client(app, "nina", fresh=True)  # the author: opened with the search's own justification, redirected
    r = nina.get(f"/searches/{sid}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/searches/{sid}?c=")
    assert _entries(fm, "review")[0]["details"]["reason_stated"] is False


def test_review_queue_link_keeps_its_candidate_anchor_through_the_reason_form(service, north_search):
    """The queue links to a candidate (``/searches/ID#p1-custody-3``); the reason form carries that anchor in a
    hidden field and the redirect after it ends at the candidate. Only a candidate anchor goes through: any
    other value (a URL, a header, markup) is dropped, never put into the redirect."""
    app, fm = service
    sid = north_search["search_id"]
    ravi = client(app, "ravi", fresh=True)
    csrf = ravi.headers["X-CSRF-Token"]
    import re
    links = re.findall(r'href="(/searches/%d#[^"]+)"' % sid, ravi.get("/queue").text)
    assert links, "the review queue should link to the search's candidates"
    path, fragment = links[-1].split("#")
    form = ravi.get(path)
    assert 'name="anchor"' in form.text and 'id="consult-anchor"' in form.text
    r = ravi.post(f"/searches/{sid}/consult", follow_redirects=False,
                  data={"reason": "second review from the queue", "csrf_token": csrf, "anchor": fragment})
    assert r.status_code == 303 and r.headers["location"].startswith(f"/searches/{sid}?c=")
    assert r.headers["location"].endswith(f"#{fragment}")
    assert f'id="{fragment}"' in ravi.get(r.headers["location"].split("#")[0]).text  # the anchor is on the page
    for hostile in ("//evil.example/", "https://evil.example/#p1-custody-1", "p1-custody-1/../../x",
                    "p1-custody-1?next=//evil.example", "p1-custody-1\r\nSet-Cookie: x=1", '"><script>', "p1-x-1"):
        r = ravi.post(f"/searches/{sid}/consult", follow_redirects=False,
                      data={"reason": "second review from the queue", "csrf_token": csrf, "anchor": hostile})
        target = r.headers["location"]
        assert r.status_code == 303 and "#" not in target and "evil" not in target and "\n" not in target, target
        assert target.startswith(f"/searches/{sid}?c=")
    again = ravi.post(f"/searches/{sid}/consult", data={"reason": " ", "csrf_token": csrf, "anchor": fragment})
    assert again.status_code == 422 and f'value="{fragment}"' in again.text  # stating the reason again keeps it
    hostile = ravi.post(f"/searches/{sid}/consult", data={"reason": " ", "csrf_token": csrf, "anchor": '"><b>x'})
    assert hostile.status_code == 422 and "<b>x" not in hostile.text


def test_web_audit_reading_posts_the_reason_then_pages_under_its_consultation(service, north_search):
    app, fm = service
    sue = client(app, "sue", fresh=True)
    csrf = sue.headers.pop("X-CSRF-Token")
    assert 'id="audit"' not in sue.get("/audit").text
    assert sue.post("/audit", data={"reason": "x"}).status_code == 403  # no CSRF
    assert sue.post("/audit", data={"reason": "", "csrf_token": csrf}).status_code == 422
    reads = len(_entries(fm, "audit.read"))
    why = "complaint 2026/15: who opened search %d" % north_search["search_id"]
    r = sue.post("/audit", data={"reason": why, "action": "review", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    target = r.headers["location"]
    assert target.startswith("/audit?") and "action=review" in target and "&k=" in target and "complaint" not in target
    page = sue.get(target)
    assert page.status_code == 200 and 'id="audit"' in page.text and why in page.text
    assert sue.get(target).status_code == 200  # a reload of the page recorded: nothing new
    new = _entries(fm, "audit.read")[: len(_entries(fm, "audit.read")) - reads]
    assert [(e["actor"], e["details"]["reason"], e["details"]["filters"]) for e in new] == [
        (who("sue"), why, {"action": "review"})]
    other = sue.get(target.replace("action=review", "action=search"))  # another filter, the same reading
    assert other.status_code == 200
    last = _entries(fm, "audit.read")[0]
    assert last["details"]["reason"] == why and last["details"]["filters"] == {"action": "search"}
    assert last["details"]["consultation"] == new[0]["id"]
    export = sue.get(target + "&format=csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert _entries(fm, "audit.export")[0]["details"]["reason"] == why
    posted = sue.post("/audit", data={"reason": "export for the DPO", "format": "csv", "csrf_token": csrf})
    assert posted.status_code == 200 and posted.headers["content-type"].startswith("text/csv")
    assert client(app, "sam").get(target).status_code == 422  # another supervisor (and agency)
    sue.post("/logout", data={"csrf_token": csrf})
    assert client(app, "sue", fresh=True).get(target).status_code == 422  # after logging out


def test_api_tokens_on_the_web_page_and_the_admin_page(service):
    """A user creates (shown once, not cached), lists and revokes their own tokens; the agency admin issues
    and revokes those of their agency's users with a reason; all audited, all CSRF-checked."""
    app, fm = service
    rita = client(app, "rita", fresh=True)
    csrf = rita.headers.pop("X-CSRF-Token")
    assert rita.post("/tokens", data={"label": "x"}).status_code == 403  # no CSRF
    made = rita.post("/tokens", data={"label": "review export script", "csrf_token": csrf})
    assert made.status_code == 201 and "no-store" in made.headers["cache-control"]
    import re
    secret = re.search(r'<code id="secret">([^<]+)</code>', made.text).group(1)
    assert "Copy this token now" in made.text
    bearer = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert bearer.get("/api/me").json()["user"] == who("rita")
    token_id = next(t["id"] for t in bearer.get("/api/tokens").json() if t["label"] == "review export script")
    listed = rita.get("/tokens")
    used = dt.datetime.now(dt.timezone.utc).date().isoformat()  # the bearer's request above, recorded by day
    assert secret not in listed.text and "review export script" in listed.text and f"<td>{used}</td>" in listed.text
    assert client(app, "ravi").post(f"/tokens/{token_id}/revoke").status_code == 404  # not his
    r = rita.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/tokens"
    assert bearer.get("/api/me").status_code == 401
    assert "revoked" in rita.get("/tokens").text
    assert [e["details"]["token_id"] for e in _entries(fm, "token.revoke")][0] == token_id
    assert _entries(fm, "token.create")[0]["actor"] == who("rita")

    adam = client(app, "adam", fresh=True)
    csrf = adam.headers.pop("X-CSRF-Token")
    assert adam.post("/admin/tokens", data={"username": "ravi", "label": "x", "reason": "y"}).status_code == 403
    assert adam.post("/admin/tokens", data={"username": "ravi", "label": "x", "reason": " ",
                                            "csrf_token": csrf}).status_code == 422
    assert adam.post("/admin/tokens", data={"username": "sam", "label": "x", "reason": ADMIN_WHY,
                                            "csrf_token": csrf}).status_code == 404  # another agency's
    issued = adam.post("/admin/tokens", data={"username": "ravi", "label": "case file sync", "reason": ADMIN_WHY,
                                              "csrf_token": csrf})
    assert issued.status_code == 201 and "Copy this token now" in issued.text and "no-store" in issued.headers["cache-control"]
    secret = re.search(r'<code id="secret">([^<]+)</code>', issued.text).group(1)
    bearer = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert bearer.get("/api/me").json()["user"] == who("ravi")
    token_id = max(t["id"] for t in bearer.get("/api/tokens").json())
    page = adam.get("/admin").text
    assert f'id="token-{token_id}"' in page and "case file sync" in page and secret not in page
    south = client(app, "sara").post(f"/admin/tokens/{token_id}/revoke", data={"reason": "x"})
    assert south.status_code == 404
    assert adam.post(f"/admin/tokens/{token_id}/revoke", data={"reason": "", "csrf_token": csrf}).status_code == 422
    r = adam.post(f"/admin/tokens/{token_id}/revoke", data={"reason": "sync moved to the new server",
                                                            "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and bearer.get("/api/me").status_code == 401
    assert [(e["actor"], e["details"]["reason"]) for e in _entries(fm, "admin.token_create")][0] == (who("adam"), ADMIN_WHY)
    assert [(e["actor"], e["details"]["token_id"], e["details"]["reason"]) for e in _entries(fm, "admin.token_revoke")
            ][0] == (who("adam"), token_id, "sync moved to the new server")


def test_audit_view_filters_and_pages_in_sql(tmp_path, monkeypatch):
    """3,000 synthetic entries over three months: every filter and page the supervisor gets is exactly what a
    plain scan of the log selects, the CSV export streams all of it, and the filters use the indexes."""
    import csv
    import datetime as dt
    import io
    import json
    import random
    import re

    from facematch.store import catalogue as catalogue_module
    from facematch.store.audit_query import AuditFilter

    fm = make_facematch(tmp_path)
    accounts = fm.accounts
    for agency in ("north", "south"):
        accounts.add_agency(agency, actor="setup")
    for name, agency, roles in (("sue", "north", ["supervisor"]), ("nina", "north", ["investigator"]),
                                ("rita", "north", ["reviewer"]), ("sam", "south", ["investigator", "supervisor"])):
        accounts.add_user(name, PASSWORD, agency=agency, roles=roles, actor="setup")
    users = {u.login: u for u in accounts.users()}
    case_of = {sid: ("OP-1", "OP-2", "OP-S")[sid % 3] for sid in range(1, 31)}
    with fm.catalogue.atomic() as conn:
        for sid, ref in case_of.items():
            owner = users["sam" if ref == "OP-S" else "nina"]
            case_id = accounts.case_id(owner.agency_id, ref, create=True)
            conn.execute("INSERT INTO searches (id, created_at, user, case_ref, reason, params, bands, "
                         "gallery_subjects, gallery_faces) VALUES (?, '2026-01-01', ?, ?, 'x', '{}', '{}', 0, 0)",
                         (sid, owner.username, ref))
            conn.execute("INSERT INTO search_owners VALUES (?, ?, ?, ?, '[]')",
                         (sid, owner.id, owner.agency_id, case_id))
    start, tick = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), iter(range(10**6))
    monkeypatch.setattr(catalogue_module, "utc_now", lambda: (start + dt.timedelta(minutes=47 * next(tick))).isoformat())
    rng = random.Random(14)
    with fm.catalogue.atomic():
        for _ in range(3000):
            action = rng.choice(["search", "review", "review.first", "decision", "login"])
            details = {} if action == "login" else {"search_id": rng.randint(1, 30)}
            if action == "search" and rng.random() < 0.2:
                details["case_ref"] = "OP-2"
            fm.catalogue.audit(rng.choice([who("nina"), who("rita"), who("sue"), who("sam"), "setup"]), action, details)
    monkeypatch.undo()
    log = fm.catalogue.conn.execute("SELECT id, at, actor, action, details FROM audit_log ORDER BY id DESC").fetchall()
    last = log[0]["id"]
    assert log[2999]["at"] < "2026-01-02" and log[0]["at"] > "2026-04-01"  # the synthetic entries' span

    def expected(members, actor=None, action=None, case=None, since=None, until=None):
        """The reference: a plain scan in Python (dates compared as text: since/until dates are whole days).
        A case is one of the members' agency: OP-S is south's (sam's), OP-1 and OP-2 north's."""
        out = []
        for r in log:
            d = json.loads(r["details"])
            own_case = (case == "OP-S") == (who("sam") in members)
            in_case = own_case and case_of.get(d.get("search_id")) == case or d.get("case_ref") == case
            if r["actor"] in members and (not actor or r["actor"] == who(actor)) and (not action or r["action"] == action) \
                    and (not case or in_case) and (not since or r["at"][:len(since)] >= since) \
                    and (not until or r["at"][:len(until)] <= until):
                out.append(r["id"])
        return out

    app = create_app(fm.settings, ServiceSettings(), web=True)
    sue, sam = client(app, "sue"), client(app, "sam")

    def fetch(who, **params):
        ids, url, pages = [], "/api/audit", 0
        query = {"limit": 250, **params}
        while url:
            r = who.get(url, params=query if not pages else None, headers={"X-Reason": "synthetic audit check"})
            assert r.status_code == 200, r.text
            ids += [e["id"] for e in r.json()]
            link = r.headers.get("link")
            url, pages = (link[1:link.index(">")] if link else None), pages + 1
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
        return [i for i in ids if i <= last], pages

    north = {who("nina"), who("rita"), who("sue")}  # the filter takes a login of the agency ("rita")
    for filters in ({}, {"actor": "rita"}, {"action": "review.first"}, {"case": "OP-1"}, {"case": "OP-2"},
                    {"case": "OP-S"}, {"actor": "sam"}, {"since": "2026-02-01", "until": "2026-02-28"},
                    {"actor": "nina", "action": "search", "case": "OP-2", "since": "2026-01-15",
                     "until": "2026-03-01T12:00:00"}):
        want = expected(north, **filters)
        got, pages = fetch(sue, **filters)
        assert got == want, filters
        assert pages == len(want) // 250 + 1 or pages == (len(want) + 1) // 250 + 1, (filters, pages, len(want))
    assert len(expected(north)) > 1500 and expected(north, case="OP-S") == [] and expected(north, actor="sam") == []
    assert fetch(sue, actor=who("sam"))[0] == []  # nor by the name south's user is recorded under
    assert fetch(sam)[0] == expected({who("sam")}) and fetch(sam, case="OP-S")[0] == expected({who("sam")}, case="OP-S")
    read = fm.catalogue.audit_entries(action="audit.read", limit=1)[0]
    assert read["actor"] == who("sam") and read["details"]["filters"] == {"case": "OP-S"}

    for bad in ({"since": "last tuesday"}, {"limit": 0}, {"limit": 5000}):
        assert sue.get("/api/audit", params=bad, headers={"X-Reason": "x"}).status_code == 422, bad
    export = sue.get("/api/audit", params={"format": "csv"}, headers={"X-Reason": "export for the DPO"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [int(r["id"]) for r in rows if int(r["id"]) <= last] == expected(north)  # all of it, past one page
    assert rows[0]["action"] == "audit.export" and json.loads(rows[0]["details"])["reason"] == "export for the DPO"
    page = sue.post("/audit", data={"reason": "synthetic audit check", "case": "OP-1", "action": "review"})
    assert page.status_code == 200 and 'id="older"' in page.text and "before=" in page.text
    older = re.search(r'id="older" href="([^"]+)"|href="([^"]+)" id="older"', page.text)
    older = (older.group(1) or older.group(2)).replace("&amp;", "&")
    assert "reason" not in older and "synthetic" not in older
    assert sue.get(older).status_code == 200
    read = fm.catalogue.audit_entries(action="audit.read", limit=1)[0]
    assert read["details"]["reason"] == "synthetic audit check" and read["details"]["before"] is not None

    plans = {}
    for name, where in (("actor", AuditFilter(1, actor="rita")), ("action", AuditFilter(1, action="review.first")),
                        ("case", AuditFilter(1, case="OP-1")), ("since", AuditFilter(1, since="2026-03-01"))):
        sql, args = where.where(fm.catalogue.conn)
        plans[name] = " | ".join(r[3] for r in fm.catalogue.conn.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM audit_log WHERE {sql} ORDER BY id DESC LIMIT 100", args))
    assert "audit_log_actor" in plans["actor"] and "audit_log_action" in plans["action"], plans
    assert "audit_log_search" in plans["case"] and "audit_log_case" in plans["case"], plans
    assert "audit_log_at" in plans["since"], plans
    fm.close()


def test_two_workers_creating_the_same_case_get_one_case(tmp_path):
    """The first searches of a new case, run at once by two search workers (two processes, two
    connections): the one that loses the race to insert the case gets the winner's row, not a UNIQUE
    error (seen under load: `scripts/load_service.py --think 3`)."""
    with make_facematch(tmp_path) as first, make_facematch(tmp_path) as second:
        agency_id = first.accounts.add_agency("north", actor="setup")
        made = first.accounts.case_id(agency_id, "RACE-1", create=True)
        looked, loser = [], second.accounts
        real = loser._one

        def stale_then_real(sql, *args):  # the loser looked before the winner's insert landed
            if sql.startswith("SELECT id FROM cases") and not looked:
                looked.append(sql)
                return None
            return real(sql, *args)

        loser._one = stale_then_real
        assert loser.case_id(agency_id, "RACE-1", create=True) == made
        assert looked and first.catalogue.conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 1


def test_ingest_list_outlives_a_restart_and_shows_only_the_agencys_runs(service):
    """After a restart the ingest page still lists the agency's ingests from the catalogue (who, when, what,
    counts, state); a run recorded as started whose process is gone shows as interrupted, one that failed
    with its reason; another agency's
    runs never show."""
    app, fm = service
    otto = client(app, "otto")
    stills = [require_data("frmdb-dev", "cctv_crops", "050", v) for v in ("Img_01.jpg", "Img_02.jpg")]
    job = otto.post("/api/ingest/scene", data={"case": "OP-RESTART"},
                    files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in stills])
    assert job.status_code == 202, job.text
    state = _wait(otto, job.json()["id"])
    assert state["state"] == "finished", state
    north = fm.accounts.agency_id("north")
    stale = fm.catalogue.start_ingest_run("custody", "/mnt/old", "otto", agency_id=north,
                                          collection_id=fm.accounts.collection("north-custody")["id"])
    south_run = fm.catalogue.start_ingest_run("scene", "/mnt/south", "sam", agency_id=fm.accounts.agency_id("south"),
                                              case_ref="OP-SOUTH-SECRET")
    fm.catalogue.finish_ingest_run(south_run, "sam", {"processed": 3, "faces_stored": 3, "total": 3})
    failed = fm.catalogue.start_ingest_run("scene", "/mnt/full", "otto", agency_id=north, case_ref="OP-FULL")
    fm.catalogue.fail_ingest_run(failed, "otto", "No space left on device")

    restarted = create_app(fm.settings, ServiceSettings(ingest_roots=(app.state.ingest_root, app.state.scene_root)))
    otto2, sam2 = client(restarted, "otto", fresh=True), client(restarted, "sam", fresh=True)
    listed = otto2.get("/api/ingest").json()
    runs = {e["run_id"]: e for e in listed}
    assert [e["run_id"] for e in listed] == sorted(runs, reverse=True)  # newest first
    done = runs[state["summary"]["run_id"]]
    assert (done["state"], done["case"], done["user"], done["processed"], done["faces_stored"], done["failures"]) == (
        "finished", "OP-RESTART", who("otto"), 2, state["summary"]["faces_stored"], 0), done
    assert done["started_at"] and done["finished_at"] and done["id"] is None  # not a job of this server
    assert runs[stale]["state"] == "interrupted" and runs[stale]["collection"] == "north-custody"
    assert (runs[failed]["state"], runs[failed]["error"]) == ("failed", "No space left on device")
    assert south_run not in runs
    page = otto2.get("/ingest").text
    assert f"run {done['run_id']} case OP-RESTART: finished 2/2 · started by {who('otto')}" in page
    assert f"run {stale} north-custody: interrupted" in page and "OP-SOUTH-SECRET" not in page
    assert f"run {failed} case OP-FULL: failed 0/0 (No space left on device)" in page
    south = {e["run_id"]: e for e in sam2.get("/api/ingest").json()}
    owners = {r: fm.catalogue.conn.execute("SELECT agency_id FROM ingest_runs WHERE id = ?", (r,)).fetchone()[0]
              for r in south}
    assert set(owners.values()) == {fm.accounts.agency_id("south")}, owners  # only south's runs
    assert south[south_run]["case"] == "OP-SOUTH-SECRET" and done["run_id"] not in south and stale not in south
    assert "OP-RESTART" not in sam2.get("/ingest").text
    # the command-line run adopted into north's collection (the fixture's gallery) is north's
    gallery = fm.catalogue.conn.execute("SELECT MIN(id) FROM ingest_runs").fetchone()[0]
    assert runs[gallery]["collection"] == "north-custody" and runs[gallery]["state"] == "finished"
    assert runs[gallery]["faces_stored"] > 0


def test_ingest_list_pages_back_past_the_last_fifty(service):
    """An agency with more than a page of ingests reaches the older ones: the API with ``before``, the
    page with an "Older ingests" link; each page newest first, no run twice, none lost."""
    app, fm = service
    otto = client(app, "otto")
    north = fm.accounts.agency_id("north")
    made = []
    for n in range(55):
        run = fm.catalogue.start_ingest_run("scene", f"/mnt/batch-{n}", "otto", agency_id=north, case_ref=f"OP-P{n}")
        fm.catalogue.finish_ingest_run(run, "otto", {"processed": 1, "faces_stored": 1, "total": 1})
        made.append(run)
    everything = [r["id"] for r in fm.catalogue.ingest_runs(north, limit=1000)]
    first = otto.get("/api/ingest").json()
    assert len(first) == 50 and [e["run_id"] for e in first] == everything[:50]
    seen = [e["run_id"] for e in first]
    while True:
        page = otto.get("/api/ingest", params={"before": seen[-1]}).json()
        if not page:
            break
        assert [e["run_id"] for e in page] == sorted((e["run_id"] for e in page), reverse=True)
        seen += [e["run_id"] for e in page]
    assert seen == everything and set(made) <= set(seen)  # each once, newest first, down to the first
    assert len(otto.get("/api/ingest", params={"limit": 7}).json()) == 7
    assert otto.get("/api/ingest", params={"before": "x"}).status_code == 422
    html = otto.get("/ingest").text
    assert f'href="/ingest?before={everything[49]}">Older ingests</a>' in html and f"run {everything[50]} " not in html
    older = otto.get(f"/ingest?before={everything[49]}").text
    assert f"run {everything[50]} " in older  # the first of the older page
    assert f"run {everything[49]} " not in older and "Newest ingests" in older
    assert ("Older ingests" in older) == (len(everything) > 100)
