"""A subject reference and a case belong to their agency; a case's deletion is complete; token use is recorded.

Two agencies that use the same custody number ("P-123") hold two different people: searches rank them
apart, and deleting or retaining one agency's subject never touches the other's (schema 11). Real faces:
north's P-123 is frmdb-dev subject 052, south's P-123 is subject 040.
"""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from facematch.cli import cli  # noqa: E402
from facematch.service.app import create_app  # noqa: E402
from facematch.settings import ServiceSettings  # noqa: E402
from facematch.store import schema  # noqa: E402
from facematch.store.accounts import _HASHER, _sha  # noqa: E402
from facematch.store.catalogue import Catalogue  # noqa: E402
from tests.conftest import make_facematch, require_data  # noqa: E402

PASSWORD = "agency password 1"
VIEWS = ("Img_23.jpg", "Img_33.jpg")


def _custody_folder(root, frmdb_subject: str, reference: str = "P-123"):
    folder = root / reference
    folder.mkdir(parents=True)
    for view in VIEWS:
        shutil.copy(require_data("frmdb-dev", "mugshots", frmdb_subject, view), folder / view)
    return root


def _agencies_and_users(fm) -> None:
    for agency in ("north", "south"):
        fm.accounts.add_agency(agency, actor="setup")
        fm.accounts.add_user("nina", PASSWORD, agency=agency, roles=["investigator"], actor="setup")


@pytest.fixture
def p123(tmp_path):
    """north's P-123 (052) and south's P-123 (040), each in its agency's collection."""
    north = _custody_folder(tmp_path / "north", "052")
    south = _custody_folder(tmp_path / "south", "040")
    fm = make_facematch(tmp_path, workers=1)
    _agencies_and_users(fm)
    assert fm.ingest_custody(north, collection="north-custody").faces_stored == 2
    assert fm.ingest_custody(south, collection="south-custody").faces_stored == 2
    yield fm, tmp_path
    fm.close()


def _subjects(fm) -> list[tuple]:
    return [tuple(r) for r in fm.catalogue.conn.execute(
        """SELECT s.reference, COALESCE(a.name, '-'), COUNT(i.id) FROM subjects s LEFT JOIN agencies a
           ON a.id = s.agency_id LEFT JOIN images i ON i.subject_id = s.id GROUP BY s.id ORDER BY 2""")]


def _face_agency(fm, face_id: int) -> str:
    return fm.catalogue.conn.execute("""SELECT a.name FROM faces f JOIN images i ON i.id = f.image_id
        JOIN agencies a ON a.id = i.owner_agency WHERE f.id = ?""", (face_id,)).fetchone()[0]


def _user(fm, agency: str):
    return fm.accounts.authenticate("nina", PASSWORD, agency)


def test_same_reference_in_two_agencies_is_two_subjects_ranked_apart(p123):
    fm, _ = p123
    assert _subjects(fm) == [("P-123", "north", 2), ("P-123", "south", 2)]
    probe = require_data("frmdb-dev", "cctv_crops", "052", "Img_01.jpg")
    north = _user(fm, "north")
    own = fm.search([probe], top=5, user=north.username, reason="test", scope=fm.accounts.search_scope(north))
    listed = own.probes[0].subjects
    assert [c.subject for c in listed] == ["P-123"] and _face_agency(fm, listed[0].face_id) == "north"

    # south shares its collection: its P-123 is another person, listed on its own, never fused with north's
    fm.accounts.share("south-custody", "north", actor="setup")
    both = fm.search([probe], top=5, user=north.username, reason="test", scope=fm.accounts.search_scope(north))
    listed = both.probes[0].subjects
    assert [c.subject for c in listed] == ["P-123", "P-123"]
    assert [_face_agency(fm, c.face_id) for c in listed] == ["north", "south"]  # 052's own images first
    assert listed[0].distance < listed[1].distance
    # the service names each candidate's collection, so a reviewer tells the two P-123 apart
    app = create_app(fm.settings, ServiceSettings(), web=False)
    path = require_data("frmdb-dev", "cctv_crops", "052", "Img_01.jpg")
    r = _login(app, "north").post("/api/searches", files=[("images", (path.name, path.read_bytes(), "image/jpeg"))],
                                  data={"case": "OP-2", "reason": "robbery, CCTV still", "top": "5"})
    assert r.status_code == 201, r.text
    assert [(c["subject"], c["collection"]) for c in r.json()["probes"][0]["subjects"]] == [
        ("P-123", "north-custody"), ("P-123", "south-custody")]
    # a person-level search fuses per subject too
    person = fm.search([probe, require_data("frmdb-dev", "cctv_crops", "052", "Img_02.jpg")], top=5,
                       one_person=True, user=north.username, reason="test", scope=fm.accounts.search_scope(north))
    assert [_face_agency(fm, c.face_id) for c in person.person.candidates] == ["north", "south"]


def test_deleting_one_agencys_subject_leaves_the_other(p123):
    fm, root = p123
    probe = require_data("frmdb-dev", "cctv_crops", "052", "Img_01.jpg")
    before = fm.search([probe], top=5, user="dc1", reason="test")
    assert len(before.probes[0].subjects) == 2
    base = ["--data-dir", str(fm.settings.data_dir), "--index-dir", str(fm.settings.index_dir)]
    run = lambda *args: CliRunner().invoke(cli, base + list(args))  # noqa: E731
    refused = run("delete", "subject", "P-123", "--reason", "retention ended")
    assert refused.exit_code != 0 and "exists in 2 agencies (north, south)" in refused.output
    assert "--agency" in refused.output and _subjects(fm) == [("P-123", "north", 2), ("P-123", "south", 2)]

    done = run("delete", "subject", "P-123", "--agency", "south", "--reason", "retention ended")
    assert done.exit_code == 0, done.output
    assert _subjects(fm) == [("P-123", "north", 2)]
    stored = fm.review(before.search_id, reason="test")[0].probes[0].subjects
    kept = [c for c in stored if c.deleted is None]
    assert len(kept) == 1 and kept[0].subject == "P-123" and _face_agency(fm, kept[0].face_id) == "north"
    assert [c.subject for c in stored if c.deleted] == [None]
    proof = fm.verify_deletion("subject", "P-123")  # north's P-123 is not a trace of south's
    assert proof["ok"], proof["checks"]
    assert fm.verify_audit().ok and all(v["ok"] for v in fm.verify_index().values())
    after = fm.search([probe], top=5, user="dc1", reason="test")
    assert [_face_agency(fm, c.face_id) for c in after.probes[0].subjects] == ["north"]
    # one subject of that reference is left: no --agency needed now
    assert run("delete", "subject", "P-123", "--reason", "retention ended").exit_code == 0
    assert _subjects(fm) == [] and fm.verify_deletion("subject", "P-123")["ok"]


def test_verify_deletion_covers_one_agencys_deletion_with_agency(p123):
    """``verify-deletion --agency`` proves one agency's deletion of a reference; without it every recorded
    deletion of the reference is combined, and the output says whose."""
    import json
    fm, _ = p123
    base = ["--data-dir", str(fm.settings.data_dir), "--index-dir", str(fm.settings.index_dir)]
    run = lambda *args: CliRunner().invoke(cli, base + list(args))  # noqa: E731
    assert run("delete", "subject", "P-123", "--agency", "south", "--reason", "retention ended").exit_code == 0
    south = run("verify-deletion", "subject", "P-123", "--agency", "south")
    assert south.exit_code == 0, south.output
    assert "Deletion of subject P-123 (recorded deletions of: south): 2 face(s), 2 image(s)" in south.output
    unrecorded = run("verify-deletion", "subject", "P-123", "--agency", "north")  # north's P-123 is still there
    assert unrecorded.exit_code != 0 and "no deletion of that agency's subject 'P-123'" in unrecorded.output
    assert "removed the data of: south" in unrecorded.output
    assert run("verify-deletion", "subject", "P-123", "--agency", "east").exit_code != 0  # no such agency

    assert run("delete", "subject", "P-123", "--agency", "north", "--reason", "retention ended").exit_code == 0
    north = json.loads(run("verify-deletion", "subject", "P-123", "--agency", "north", "--json").output)
    assert (north["ok"], north["agencies"], north["faces"], north["images"]) == (True, ["north"], 2, 2)
    every = run("verify-deletion", "subject", "P-123")  # today's behaviour: both deletions, named
    assert every.exit_code == 0, every.output
    assert "Deletion of subject P-123 (recorded deletions of: north, south): 4 face(s), 4 image(s)" in every.output
    proof = fm.verify_deletion("subject", "P-123", agency="south")
    assert proof["ok"] and proof["agencies"] == ["south"] and proof["faces"] == 2


def test_retention_deletes_only_the_due_agencys_subject(tmp_path):
    north = _custody_folder(tmp_path / "north", "052")
    manifest = tmp_path / "north.csv"
    manifest.write_text("path,subject_id,not_convicted\n" + "".join(
        f"{north / 'P-123' / v},P-123,yes\n" for v in VIEWS))
    south = _custody_folder(tmp_path / "south", "040")
    fm = make_facematch(tmp_path, workers=1)
    _agencies_and_users(fm)
    fm.ingest_custody(manifest, collection="north-custody")
    fm.ingest_custody(south, collection="south-custody")
    due = fm.retention_due()
    assert [(d.subject, d.agency, d.due_images) for d in due] == [("P-123", "north", 2)]
    listed = CliRunner().invoke(cli, ["--data-dir", str(fm.settings.data_dir), "--index-dir",
                                      str(fm.settings.index_dir), "retention", "due"])
    assert "P-123 (north)" in listed.output and "(south)" not in listed.output
    fm.retention_apply(reason="not convicted: delete at once")
    assert _subjects(fm) == [("P-123", "south", 2)]
    assert fm.verify_deletion("subject", "P-123")["ok"] and fm.verify_audit().ok
    fm.close()


# -- migration from schema 10 --------------------------------------------------------------------


def test_migration_from_schema_10_splits_a_subject_shared_by_agencies(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:10])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 10)
    cat = Catalogue(tmp_path / "data")
    secret = "fm_token_from_schema_10"
    with cat.atomic() as conn:
        for name in ("north", "south"):
            conn.execute("INSERT INTO agencies (name, created_at) VALUES (?, '2026-01-01')", (name,))
        conn.execute("INSERT INTO users (id, username, agency_id, password_hash, created_at, actor) "
                     "VALUES (1, 'nina', 1, ?, '2026-01-01', 'nina')", (_HASHER.hash(PASSWORD),))
        conn.execute("INSERT INTO api_tokens (user_id, token_sha256, label, created_at) VALUES (1, ?, 'x', "
                     "'2026-01-01')", (_sha(secret),))
        conn.execute("INSERT INTO subjects (id, reference, created_at) VALUES (1, 'P-123', '2026-01-01'), "
                     "(2, 'P-9', '2026-01-01'), (3, 'EMPTY', '2026-01-01')")
        # P-123: one image of no agency, one of north, two of south; P-9: south only
        for image_id, owner, subject in ((1, 0, 1), (2, 1, 1), (3, 2, 1), (4, 2, 1), (5, 2, 2)):
            conn.execute("INSERT INTO images (id, sha256, kind, subject_id, original_path, outcome, ingested_at, "
                         "owner_agency) VALUES (?, ?, 'custody', ?, ?, 'ok', '2026-01-01', ?)",
                         (image_id, f"{image_id:064x}", subject, f"/{image_id}.jpg", owner))
            conn.execute("INSERT INTO faces (id, image_id, kind, subject_id, face_no, box_left, box_top, box_right, "
                         "box_bottom, detector, embedding, model_name, model_version) VALUES (?, ?, 'custody', ?, 0, "
                         "0, 0, 10, 10, 'hog', ?, 'm', '1')",
                         (image_id, image_id, subject, np.zeros(128, np.float32).tobytes()))
        cat.audit("nina", "login", {"agency": "north"})
    cat.close()
    monkeypatch.undo()

    fm = make_facematch(tmp_path)
    conn = fm.catalogue.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION >= 11
    assert not conn.execute("PRAGMA foreign_key_check").fetchall()
    subjects = {(r[0], r[1]): r[2] for r in conn.execute("SELECT reference, agency_id, id FROM subjects")}
    assert set(subjects) == {("P-123", 0), ("P-123", 1), ("P-123", 2), ("P-9", 2), ("EMPTY", 0)}
    assert subjects["P-123", 0] == 1 and subjects["P-9", 2] == 2  # the first agency keeps the id
    for image_id, owner, subject_id, face_subject in conn.execute(
            "SELECT i.id, i.owner_agency, i.subject_id, f.subject_id FROM images i JOIN faces f ON f.image_id = i.id"):
        ref = "P-9" if image_id == 5 else "P-123"
        assert subject_id == face_subject == subjects[ref, owner], image_id
    assert conn.execute("SELECT last_used_at FROM api_tokens").fetchone()[0] is None
    assert fm.verify_audit().ok
    with pytest.raises(Exception, match="exists in 3 agencies"):
        fm.delete_subject("P-123", reason="retention ended")
    assert fm.delete_subject("P-123", agency="south", reason="retention ended") == 2
    assert {(r[0], r[1]) for r in conn.execute("SELECT reference, agency_id FROM subjects")} == {
        ("P-123", 0), ("P-123", 1), ("P-9", 2), ("EMPTY", 0)}
    assert fm.verify_deletion("subject", "P-123")["ok"] and fm.verify_audit().ok
    fm.close()


def test_migration_to_schema_12_ties_past_ingest_runs_to_their_agency(tmp_path, monkeypatch):
    """Runs recorded before schema 12 take their agency, collection and (one) case from the images they
    stored; a run that stored nothing belongs to no agency."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:11])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 11)
    cat = Catalogue(tmp_path / "data")
    with cat.atomic() as conn:
        for name in ("north", "south"):
            conn.execute("INSERT INTO agencies (name, created_at) VALUES (?, '2026-01-01')", (name,))
        conn.execute("INSERT INTO collections (id, name, agency_id, created_at) "
                     "VALUES (7, 'south-custody', 2, '2026-01-01')")
        conn.execute("INSERT INTO cases (id, agency_id, reference, created_at) VALUES (3, 1, 'OP-1', '2026-01-01')")
        for run_id, kind in ((1, "custody"), (2, "scene"), (3, "custody")):
            conn.execute("INSERT INTO ingest_runs (id, kind, source, user, started_at, finished_at, status) "
                         "VALUES (?, ?, '/src', 'otto', '2026-01-01', '2026-01-01', 'finished')", (run_id, kind))
        for image_id, kind, owner, run_id, case_ref in ((1, "custody", 2, 1, None), (2, "scene", 1, 2, "OP-1")):
            conn.execute("INSERT INTO images (id, sha256, kind, case_ref, original_path, outcome, ingested_at, run_id, "
                         "owner_agency) VALUES (?, ?, ?, ?, '/x.jpg', 'ok', '2026-01-01', ?, ?)",
                         (image_id, f"{image_id:064x}", kind, case_ref, run_id, owner))
        conn.execute("INSERT INTO image_owners (image_id, collection_id) VALUES (1, 7)")
        conn.execute("INSERT INTO image_owners (image_id, case_id) VALUES (2, 3)")
    cat.close()
    monkeypatch.undo()
    cat = Catalogue(tmp_path / "data")
    rows = cat.conn.execute("SELECT id, agency_id, collection_id, case_ref FROM ingest_runs ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [(1, 2, 7, None), (2, 1, None, "OP-1"), (3, 0, None, None)]
    assert [r["id"] for r in cat.ingest_runs(2)] == [1] and cat.ingest_runs(2)[0]["collection"] == "south-custody"
    assert [(r["id"], r["case_ref"], r["state"]) for r in cat.ingest_runs(1)] == [(2, "OP-1", "finished")]
    cat.close()


# -- complete case deletion ---------------------------------------------------------------------


def _login(app, agency: str) -> TestClient:
    c = TestClient(app)
    r = c.post("/api/login", json={"username": "nina", "password": PASSWORD, "agency": agency})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return c


def _cctv(view: str):
    path = require_data("frmdb-dev", "cctv_crops", "043", view)
    return ("images", (path.name, path.read_bytes(), "image/jpeg"))


def test_deleting_an_agencys_case_leaves_no_trace_and_the_other_agencys_case_whole(tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    for view in ("Img_01.jpg", "Img_02.jpg"):
        shutil.copy(require_data("frmdb-dev", "cctv_crops", "043", view), scene / view)
    fm = make_facematch(tmp_path, workers=1)
    _agencies_and_users(fm)
    for agency in ("north", "south"):
        assert fm.ingest_scene(scene, case="OP-1", agency=agency).faces_stored >= 1
    app = create_app(fm.settings, ServiceSettings(), web=False)
    north, south = _login(app, "north"), _login(app, "south")
    form = {"case": "OP-1", "reason": "robbery, CCTV still"}
    shared = [north.post("/api/searches", files=[_cctv("Img_03.jpg")], data=form),
              south.post("/api/searches", files=[_cctv("Img_03.jpg")], data=form)]  # one probe file, two searches
    own = north.post("/api/searches", files=[_cctv("Img_04.jpg")], data=form)
    assert all(r.status_code == 201 for r in shared + [own]), own.text
    north_ids = {shared[0].json()["search_id"], own.json()["search_id"]}
    probes = fm.settings.data_dir / "probes"
    files = sorted(p.name for p in probes.iterdir())
    assert len(files) == 2
    scene_leads = [c for c in own.json()["probes"][0]["scene_faces"]]
    assert scene_leads, own.json()  # north's own OP-1 stills of 043 are leads
    fm.decide(own.json()["search_id"], 1, decision="confirmed", reviewer="rev", note="same jacket",
              candidate_list="scene")

    assert fm.delete_case("OP-1", agency="north", reason="case closed") >= 1
    conn = fm.catalogue.conn
    assert not conn.execute(f"SELECT 1 FROM searches WHERE id IN ({','.join(map(str, north_ids))})").fetchall()
    assert not conn.execute("SELECT 1 FROM decisions").fetchall()
    assert [r[0] for r in conn.execute("SELECT a.name FROM cases k JOIN agencies a ON a.id = k.agency_id")] == ["south"]
    assert conn.execute("SELECT COUNT(*) FROM images WHERE kind = 'scene'").fetchone()[0] == 2  # south's
    left = sorted(p.name for p in probes.iterdir())
    assert len(left) == 1 and left[0] in files  # the file south's search also uses stays
    assert north.get("/api/searches").json() == []
    assert [s["id"] for s in south.get("/api/searches").json()] == [shared[1].json()["search_id"]]
    assert south.get(f"/api/searches/{shared[1].json()['search_id']}").status_code == 200
    proof = fm.verify_deletion("case", "OP-1")
    assert proof["ok"], proof["checks"]
    assert fm.verify_audit().ok and all(v["ok"] for v in fm.verify_index().values())
    entry = fm.catalogue.audit_entries(action="retention.delete_case")[0]["details"]
    assert (entry["searches_erased"], entry["cases"], entry["probe_files"]) == (2, 1, 1)

    # the operator's CLI without --agency: every agency's case of that reference, the shared probe file too
    base = ["--data-dir", str(fm.settings.data_dir), "--index-dir", str(fm.settings.index_dir)]
    r = CliRunner().invoke(cli, base + ["delete", "case", "OP-1", "--reason", "case closed"])
    assert r.exit_code == 0, r.output
    assert not list(probes.iterdir()) and not conn.execute("SELECT 1 FROM cases").fetchall()
    assert not conn.execute("SELECT 1 FROM searches").fetchall()
    assert fm.verify_deletion("case", "OP-1")["ok"] and fm.verify_audit().ok
    fm.close()


# -- API token last use --------------------------------------------------------------------------


def test_token_last_use_is_recorded_once_a_day_and_shown(tmp_path):
    fm = make_facematch(tmp_path)
    _agencies_and_users(fm)
    fm.accounts.add_user("adam", PASSWORD, agency="north", roles=["admin"], actor="setup")
    app = create_app(fm.settings, ServiceSettings(), web=True)
    nina = _login(app, "north")
    made = nina.post("/api/tokens", data={"label": "export script"})
    assert made.status_code == 201, made.text
    token_id, secret = made.json()["id"], made.json()["token"]
    assert [t["last_used_at"] for t in nina.get("/api/tokens").json()] == [None]
    assert "never" in nina.get("/tokens").text

    bearer = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert bearer.get("/api/me").status_code == 200
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert [t["last_used_at"] for t in nina.get("/api/tokens").json()] == [today]
    assert f"<td>{today}</td>" in nina.get("/tokens").text
    adam = TestClient(app)
    r = adam.post("/api/login", json={"username": "adam", "password": PASSWORD, "agency": "north"})
    assert r.status_code == 200
    assert f"<td>{today}</td>" in adam.get("/admin").text
    assert [t["last_used_at"] for t in adam.get("/api/admin/users/nina/tokens").json()] == [today]

    # at most one write per token per day: a second use today changes nothing; a new day writes again
    conn = fm.catalogue.conn
    writes = conn.total_changes
    fm.accounts.token_user(secret)
    assert conn.total_changes == writes
    with fm.catalogue.atomic():
        conn.execute("UPDATE api_tokens SET last_used_at = '2026-01-01' WHERE id = ?", (token_id,))
    fm.accounts.token_user(secret)
    assert conn.execute("SELECT last_used_at FROM api_tokens WHERE id = ?", (token_id,)).fetchone()[0] == today
    fm.close()


def test_images_adopted_by_a_collection_join_that_agencys_subject(tmp_path):
    """A command-line ingest (no agency) later given to south's collection: its subject becomes south's,
    merged with south's subject of the same reference, and north's P-123 stays apart."""
    north = _custody_folder(tmp_path / "north", "052")
    loose = _custody_folder(tmp_path / "loose", "040")
    fm = make_facematch(tmp_path, workers=1)
    _agencies_and_users(fm)
    fm.ingest_custody(north, collection="north-custody")
    run = fm.ingest_custody(loose)
    assert _subjects(fm) == [("P-123", "-", 2), ("P-123", "north", 2)]
    fm.accounts.assign_run(run.run_id, collection_id=fm.accounts.collection("south-custody")["id"])
    assert _subjects(fm) == [("P-123", "north", 2), ("P-123", "south", 2)]
    faces = fm.catalogue.conn.execute("""SELECT COUNT(*) FROM faces f JOIN images i ON i.id = f.image_id
        JOIN subjects s ON s.id = f.subject_id WHERE s.agency_id <> i.owner_agency""").fetchone()[0]
    assert faces == 0
    fm.close()
