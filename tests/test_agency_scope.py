"""Nothing about one agency shows through another's identities or ingests (schema 10).

Usernames are unique within an agency only, so an admin adding a name that exists elsewhere learns
nothing; each agency keeps its own record of a file it ingests, so "already stored" never reveals that
another agency holds the same image, and erasing one agency's copy leaves the other's.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from facematch.cli import cli  # noqa: E402
from facematch.ingest.bulk import Owner, analyse_locally, ingest  # noqa: E402
from facematch.ingest.sources import custody_items  # noqa: E402
from facematch.service.app import create_app  # noqa: E402
from facematch.settings import ServiceSettings  # noqa: E402
from facematch.store import schema  # noqa: E402
from facematch.store.accounts import _HASHER, _sha  # noqa: E402
from facematch.store.catalogue import Catalogue  # noqa: E402
from tests.conftest import make_facematch, require_data  # noqa: E402

NORTH_PW, SOUTH_PW = "north password 1", "south password 2"
WHY = "joined the unit (approved by the unit head)"


def _agencies(fm) -> None:
    for agency in ("north", "south"):
        fm.accounts.add_agency(agency, actor="setup")


def _login(app, username: str, password: str, agency: str | None = None):
    c = TestClient(app)
    r = c.post("/api/login", json={"username": username, "password": password, "agency": agency})
    if r.status_code == 200:
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return c, r


# -- identities --------------------------------------------------------------------------------------


def test_same_username_in_two_agencies_each_logs_in_to_its_own_only(tmp_path):
    fm = make_facematch(tmp_path)
    _agencies(fm)
    fm.accounts.add_user("adam", NORTH_PW, agency="north", roles=["admin"], actor="setup")
    fm.accounts.add_user("sara", SOUTH_PW, agency="south", roles=["admin"], actor="setup")
    fm.accounts.add_user("sam", NORTH_PW, agency="north", roles=["investigator"], actor="setup")
    app = create_app(fm.settings, ServiceSettings(), web=True)
    sara, _ = _login(app, "sara", SOUTH_PW, "south")
    adam, _ = _login(app, "adam", NORTH_PW, "north")

    body = {"username": "sam", "password": SOUTH_PW, "roles": ["reviewer"], "reason": WHY}
    made = sara.post("/api/admin/users", json=body)  # exists in north: south's admin must not notice
    assert made.status_code == 201, made.text
    assert made.json() == {"user": "sam", "recorded_as": "sam@south", "agency": "south", "roles": ["reviewer"]}
    again = sara.post("/api/admin/users", json=body)  # exists in south itself: a clear 409
    assert again.status_code == 409 and "'sam' already exists in south" in again.json()["error"]
    assert adam.post("/api/admin/users", json={**body, "password": NORTH_PW}).status_code == 409

    north_sam, r = _login(app, "sam", NORTH_PW, "north")
    assert r.status_code == 200 and r.json()["user"] == "sam@north" and r.json()["agency"] == "north"
    south_sam, r = _login(app, "sam", SOUTH_PW, "south")
    assert r.status_code == 200 and r.json()["user"] == "sam@south" and r.json()["roles"] == ["reviewer"]
    assert _login(app, "sam", NORTH_PW, "south")[1].status_code == 401  # north's password opens nothing in south
    assert _login(app, "sam", SOUTH_PW, "north")[1].status_code == 401
    assert _login(app, "sam@south", SOUTH_PW)[1].json()["agency"] == "south"  # the qualified form, one field
    assert _login(app, "sam", SOUTH_PW)[1].status_code == 401  # a name alone is ambiguous: never guessed
    assert north_sam.get("/api/me").json()["agency"] == "north" and south_sam.get("/api/me").json()["agency"] == "south"

    # the web form: an agency list, the browser's last agency preselected
    browser = TestClient(app)
    page = browser.get("/login")
    assert '<select name="agency"' in page.text and '<option value="south">' in page.text
    r = browser.post("/login", data={"username": "sam", "password": SOUTH_PW, "agency": "south"},
                     follow_redirects=False)
    assert r.status_code == 303 and browser.cookies.get("fm_agency") == "south"
    assert '<option value="south" selected>' in browser.get("/login").text
    assert browser.get("/api/me").json()["user"] == "sam@south"
    wrong = TestClient(app).post("/login", data={"username": "sam", "password": SOUTH_PW, "agency": "north"})
    assert wrong.status_code == 401 and "wrong agency, username or password" in wrong.text

    # tokens name their user; the audit names each unambiguously; admins see their own sam only
    token = sara.post("/api/admin/users/sam/tokens", json={"label": "script", "reason": WHY}).json()["token"]
    assert TestClient(app, headers={"Authorization": f"Bearer {token}"}).get("/api/me").json()["user"] == "sam@south"
    logins = {e["actor"] for e in fm.catalogue.audit_entries(action="login")}
    assert {"sam@north", "sam@south"} <= logins
    assert [u["recorded_as"] for u in sara.get("/api/admin/users").json() if u["username"] == "sam"] == ["sam@south"]
    assert [u["recorded_as"] for u in adam.get("/api/admin/users").json() if u["username"] == "sam"] == ["sam@north"]
    assert sara.post("/api/admin/users/sam/disable", json={"reason": WHY}).status_code == 200
    assert _login(app, "sam", NORTH_PW, "north")[1].status_code == 200  # north's sam is another person
    fm.close()


def test_cli_adds_a_name_another_agency_uses(tmp_path):
    password = tmp_path / "pw.txt"
    password.write_text(NORTH_PW + "\n")
    base = ["--data-dir", str(tmp_path / "data"), "--index-dir", str(tmp_path / "indexes")]
    run = lambda *args: CliRunner().invoke(cli, base + list(args), catch_exceptions=False)  # noqa: E731
    for agency in ("north", "south"):
        assert run("agencies", "add", agency).exit_code == 0
    add = ["users", "add", "sam", "--role", "investigator", "--password-file", str(password), "--reason", WHY]
    assert run(*add, "--agency", "north").exit_code == 0
    made = run(*add, "--agency", "south")
    assert made.exit_code == 0 and "user sam@south (south: investigator) created" in made.output
    again = run(*add, "--agency", "south")
    assert again.exit_code != 0 and "already exists in south" in again.output
    assert "\t".join(["sam@north", "north", "investigator"]) in run("users", "list").output


# -- migration --------------------------------------------------------------------------------------


def _v9_catalogue(tmp_path, monkeypatch) -> tuple:
    """A catalogue as schema 9 left it: a user per agency, a token, an image owned by north's collection."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:9])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 9)
    data = tmp_path / "data"
    cat = Catalogue(data)
    secret = "fm_old_token_of_nina"
    with cat.atomic() as conn:
        for name in ("north", "south"):
            conn.execute("INSERT INTO agencies (name, created_at) VALUES (?, '2026-01-01')", (name,))
            conn.execute("INSERT INTO collections (name, agency_id, created_at) SELECT ?, id, '2026-01-01' "
                         "FROM agencies WHERE name = ?", (f"{name}-custody", name))
        for uid, (user, agency) in enumerate((("nina", 1), ("sam", 2)), start=1):
            conn.execute("INSERT INTO users (id, username, agency_id, password_hash, created_at) "
                         "VALUES (?, ?, ?, ?, '2026-01-01')", (uid, user, agency, _HASHER.hash(NORTH_PW)))
            conn.execute("INSERT INTO user_roles VALUES (?, 'investigator')", (uid,))
        conn.execute("INSERT INTO user_roles VALUES (2, 'supervisor')")
        conn.execute("INSERT INTO api_tokens (user_id, token_sha256, label, created_at) VALUES (1, ?, 'x', "
                     "'2026-01-01')", (_sha(secret),))
        conn.execute("INSERT INTO images (id, sha256, kind, original_path, outcome, ingested_at) "
                     "VALUES (1, ?, 'custody', '/a.jpg', 'no_face', '2026-01-01')", ("ab" * 32,))
        conn.execute("INSERT INTO images (id, sha256, kind, original_path, outcome, ingested_at) "
                     "VALUES (2, ?, 'custody', '/b.jpg', 'no_face', '2026-01-01')", ("cd" * 32,))
        conn.execute("INSERT INTO image_owners (image_id, collection_id) VALUES (1, 1)")
        cat.audit("nina", "login", {"agency": "north"})
    cat.close()
    monkeypatch.undo()
    return data, secret


def test_migration_from_schema_9_keeps_users_tokens_images_and_the_chain(tmp_path, monkeypatch):
    _, secret = _v9_catalogue(tmp_path, monkeypatch)
    fm = make_facematch(tmp_path)
    conn = fm.catalogue.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION >= 11
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1 and not conn.execute("PRAGMA foreign_key_check").fetchall()
    # users already there keep their name (what their past entries say) and can log in as before
    nina = fm.accounts.authenticate("nina", NORTH_PW)
    assert (nina.username, nina.login, nina.agency) == ("nina", "nina", "north")
    assert fm.accounts.authenticate("nina", NORTH_PW, "north") == nina
    assert fm.accounts.token_user(secret) == nina
    # an old entry still counts as north's in north's supervisor view, and the chain still verifies
    assert fm.verify_audit().ok
    # images take their owner's agency as dedupe scope; an unowned one none
    assert dict(conn.execute("SELECT id, owner_agency FROM images").fetchall()) == {1: 1, 2: 0}
    # the same name in the other agency is now fine; rows referring to the rebuilt tables still cascade
    made = fm.accounts.add_user("nina", SOUTH_PW, agency="south", roles=["reviewer"], actor="setup")
    assert made.username == "nina@south" and fm.accounts.authenticate("nina", SOUTH_PW, "south") == made
    with fm.catalogue.atomic():
        conn.execute("DELETE FROM users WHERE id = ?", (made.id,))
        conn.execute("DELETE FROM images WHERE id = 1")
    assert conn.execute("SELECT COUNT(*) FROM user_roles WHERE user_id = ?", (made.id,)).fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM image_owners").fetchone()[0] == 0
    fm.close()


# -- ingest -----------------------------------------------------------------------------------------


@pytest.fixture
def two_agencies(tmp_path):
    """Two agencies; the same two real custody photographs (frmdb-dev 052) and two real CCTV stills (043)."""
    views = [require_data("frmdb-dev", "mugshots", "052", v) for v in ("Img_23.jpg", "Img_33.jpg")]
    stills = [require_data("frmdb-dev", "cctv_crops", "043", v) for v in ("Img_01.jpg", "Img_02.jpg")]
    custody = tmp_path / "custody" / "052"
    scene = tmp_path / "scene"
    custody.mkdir(parents=True)
    scene.mkdir()
    for path in views:
        shutil.copy(path, custody / path.name)
    for path in stills:
        shutil.copy(path, scene / path.name)
    fm = make_facematch(tmp_path)
    _agencies(fm)
    yield fm, custody.parent, scene
    fm.close()


def _images(fm, agency: str, kind: str = "custody") -> list[tuple]:
    return fm.catalogue.conn.execute(
        """SELECT i.id, i.sha256, COALESCE(c.name, k.reference) FROM images i
           JOIN agencies a ON a.id = i.owner_agency LEFT JOIN image_owners o ON o.image_id = i.id
           LEFT JOIN collections c ON c.id = o.collection_id LEFT JOIN cases k ON k.id = o.case_id
           WHERE a.name = ? AND i.kind = ? ORDER BY i.id""", (agency, kind)).fetchall()


def test_same_files_ingested_by_two_agencies_each_get_their_own_records(two_agencies):
    fm, custody, scene = two_agencies
    north = fm.ingest_custody(custody, collection="north-custody")
    assert north.already_stored == 0 and north.faces_stored == 2
    south = fm.ingest_custody(custody, collection="south-custody")
    assert south.already_stored == 0 and south.label_conflicts == 0 and south.faces_stored == 2  # no hint
    north_rows, south_rows = _images(fm, "north"), _images(fm, "south")
    assert {r[1] for r in north_rows} == {r[1] for r in south_rows} and len(south_rows) == 2
    assert {r[2] for r in north_rows} == {"north-custody"} and {r[2] for r in south_rows} == {"south-custody"}
    for collection in ("north-custody", "south-custody"):  # re-runs: idempotent within each agency
        again = fm.ingest_custody(custody, collection=collection)
        assert again.already_stored == 2 and again.faces_stored == 0
    assert fm.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 4

    # each agency's search sees its own copy only
    fm.accounts.add_user("nina", NORTH_PW, agency="north", roles=["investigator"], actor="setup")
    fm.accounts.add_user("nina", SOUTH_PW, agency="south", roles=["investigator"], actor="setup")
    scopes = {a: fm.accounts.search_scope(fm.accounts.authenticate("nina", pw, a))
              for a, pw in (("north", NORTH_PW), ("south", SOUTH_PW))}
    faces_of = lambda a: {r[0] for r in fm.catalogue.conn.execute(  # noqa: E731
        "SELECT f.id FROM faces f JOIN images i ON i.id = f.image_id JOIN agencies a ON a.id = i.owner_agency "
        "WHERE a.name = ?", (a,))}
    assert set(scopes["north"].custody_face_ids) == faces_of("north") and len(faces_of("north")) == 2
    assert set(scopes["south"].custody_face_ids) == faces_of("south") and not faces_of("north") & faces_of("south")

    # crime-scene stills: each agency's case of the same reference gets its own copies
    for agency in ("north", "south"):
        run = fm.ingest_scene(scene, case="OP-1", agency=agency)
        assert run.already_stored == 0 and run.outcomes, run.to_dict()
        assert {r[2] for r in _images(fm, agency, "scene")} == {"OP-1"} and len(_images(fm, agency, "scene")) == 2
    assert fm.ingest_scene(scene, case="OP-1", agency="south").already_stored == 2


def test_relabelled_copy_in_one_agency_is_no_conflict_in_the_other(two_agencies):
    """A label conflict against another agency's copy would name their subject id: never consulted."""
    fm, custody, _ = two_agencies
    fm.ingest_custody(custody, collection="north-custody")
    other = custody.parent / "relabelled"
    shutil.copytree(custody / "052", other / "S-900")
    south = fm.ingest_custody(other, collection="south-custody")
    assert south.label_conflicts == 0 and south.faces_stored == 2
    failures = fm.catalogue.conn.execute("SELECT reason FROM ingest_failures").fetchall()
    assert not any("052" in r[0] for r in failures)
    subjects = fm.catalogue.conn.execute("""SELECT DISTINCT s.reference FROM images i
        JOIN subjects s ON s.id = i.subject_id WHERE i.owner_agency = ?""", (fm.accounts.agency_id("north"),))
    assert [r[0] for r in subjects] == ["052"]  # north's copy was not moved


def _raising_after_one(exc: BaseException):
    """An analysis backend that yields its first result, then raises ``exc`` (a kill, or an error)."""
    def analyse(jobs, settings):
        for n, result in enumerate(analyse_locally(jobs, settings)):
            if n == 1:
                raise exc
            yield result
    return analyse


def test_a_crashed_ingest_rerun_loses_and_duplicates_nothing_within_the_agency(two_agencies):
    fm, custody, _ = two_agencies
    fm.ingest_custody(custody, collection="north-custody")
    coll = fm.accounts.collection("south-custody")
    settings = fm.settings.replace(batch_size=1)

    killed_after_one = _raising_after_one(KeyboardInterrupt("killed mid-run"))
    with pytest.raises(KeyboardInterrupt):
        ingest(fm.catalogue, fm.index_store, custody_items(custody), kind="custody", settings=settings,
               user="otto@south", source=str(custody), analyse=killed_after_one,
               owner=Owner(coll["agency_id"], coll["id"]))
    assert [r[2] for r in _images(fm, "south")] == ["south-custody"]  # committed with its owner
    rerun = fm.ingest_custody(custody, collection="south-custody")
    assert rerun.already_stored == 1 and rerun.faces_stored == 1
    assert [r[2] for r in _images(fm, "south")] == ["south-custody", "south-custody"]
    assert len(_images(fm, "north")) == 2


def test_an_ingest_that_raises_is_recorded_as_failed_with_its_reason(two_agencies):
    """An error (not a kill) ends the run as "failed" with the message its user saw, audited; what it stored
    stays, a later writer does not call it interrupted, and a re-run stores the rest once."""
    fm, custody, _ = two_agencies
    coll = fm.accounts.collection("north-custody")

    disk_full_after_one = _raising_after_one(OSError("No space left on device"))
    with pytest.raises(OSError):
        ingest(fm.catalogue, fm.index_store, custody_items(custody), kind="custody",
               settings=fm.settings.replace(batch_size=1), user="otto@north", source=str(custody),
               analyse=disk_full_after_one, owner=Owner(coll["agency_id"], coll["id"]))
    assert len(_images(fm, "north")) == 1
    fm.ingest_custody(custody, collection="north-custody")  # a later writer marks dead runs interrupted
    runs = fm.catalogue.ingest_runs(coll["agency_id"])
    failed, rerun = runs[1], runs[0]
    assert (failed["state"], failed["error"], failed["processed"]) == ("failed", "internal error: OSError", 1)
    assert failed["finished_at"] and (rerun["state"], rerun["error"], rerun["processed"]) == ("finished", None, 1)
    assert len(_images(fm, "north")) == 2
    audited = fm.catalogue.conn.execute(
        "SELECT actor, details FROM audit_log WHERE action = 'ingest.failed'").fetchall()
    assert [(u, json.loads(d)) for u, d in audited] == [
        ("otto@north", {"run_id": failed["id"], "error": "internal error: OSError"})]
    assert not fm.catalogue.conn.execute("SELECT 1 FROM audit_log WHERE action = 'ingest.interrupted'").fetchall()


def test_erasing_one_agencys_copy_leaves_the_others(two_agencies):
    fm, custody, scene = two_agencies
    fm.ingest_custody(custody, collection="north-custody")
    fm.ingest_custody(custody, collection="south-custody")
    photo = custody / "052" / "Img_23.jpg"
    assert fm.delete_image(str(photo), agency="north", reason="wrong person enrolled") == 1
    assert len(_images(fm, "north")) == 1 and len(_images(fm, "south")) == 2
    sha = _images(fm, "south")[0][1]
    proof = fm.verify_deletion("image", str(photo))
    assert proof["ok"], proof["checks"]  # south's copy of the same file is not a trace of north's deletion
    assert sha in {r[1] for r in _images(fm, "south")}

    for agency in ("north", "south"):
        fm.ingest_scene(scene, case="OP-1", agency=agency)
    assert fm.delete_case("OP-1", agency="south", reason="case closed") >= 1
    assert len(_images(fm, "south", "scene")) == 0 and len(_images(fm, "north", "scene")) == 2
    proof = fm.verify_deletion("case", "OP-1")  # north's images of its own OP-1 are no trace of south's deletion
    assert not [p for p in proof["checks"]["catalogue"] if "images" in p], proof["checks"]
    # south's case row went with its images (schema 11); north's case of the same reference is no trace
    assert proof["ok"] and proof["checks"]["catalogue"] == [], proof["checks"]
    assert [r[0] for r in fm.catalogue.conn.execute("SELECT a.name FROM cases k JOIN agencies a ON a.id = "
                                                     "k.agency_id WHERE k.reference = 'OP-1'")] == ["north"]

    # retention: north's copy is due (not convicted), south's is not; only north's goes
    flagged = custody.parent / "north.csv"
    flagged.write_text(f"path,subject_id,not_convicted\n{photo},052,yes\n")
    assert fm.ingest_custody(flagged, collection="north-custody").faces_stored == 1
    done = fm.retention_apply(reason="not convicted: delete at once")
    assert done and len(_images(fm, "north")) == 1 and len(_images(fm, "south")) == 2
