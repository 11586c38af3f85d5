"""The audit log's keyed hash chain: tampering with a real catalogue's file is found, and the first bad
entry named; stored searches and decisions are checked against it; legacy catalogues are chained."""

import json
import shutil
import sqlite3
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from conftest import make_facematch

from facematch.cli.commands import cli
from facematch.store import audit_chain
from facematch.store.catalogue import CATALOGUE_FILENAME, Catalogue
from facematch.store.schema import MIGRATIONS


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A real catalogue (the astronaut enrolled) with two searches, decisions, a viewing and an export;
    closed, so tests copy it and tamper with the copy's SQLite file."""
    from skimage import data

    root = tmp_path_factory.mktemp("audit-chain")
    (root / "custody" / "eileen-collins").mkdir(parents=True)
    image = root / "custody" / "eileen-collins" / "astronaut.png"
    cv2.imwrite(str(image), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    with make_facematch(root) as fm:
        fm.ingest_custody(root / "custody")
        first = fm.search([image], top=2, user="dc-smith", reason="suspect at port")
        fm.decide(first.search_id, 1, decision="confirmed", reviewer="PC1", probe=1, note="ears")
        second = fm.search([image], top=2, user="dc-jones", reason="second look", case="OP-X")
        fm.review(first.search_id, user="sgt-brown", reason="supervision")
        fm.export(first.search_id, output=root / "export.json", recipient="CPS", reason="case file")
        fm.decide(second.search_id, 1, decision="rejected", reviewer="PC2", probe=1)
        head = fm.audit_head()
    return root, head


@pytest.fixture
def copy(pristine, tmp_path):
    """A copy of the pristine catalogue's folders; returns (root, head exported before any tampering)."""
    root, head = pristine
    for name in ("data", "indexes"):
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path, head


def _raw(root: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(root / "data" / CATALOGUE_FILENAME, isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    return conn


def _verify(root: Path, head: str | None = None):
    with make_facematch(root) as fm:
        return fm.verify_audit(head=head)


def test_a_clean_chain_verifies_with_and_without_the_head(copy):
    root, head = copy
    report = _verify(root, head)
    assert report.ok and report.findings == [] and report.head == head
    assert report.entries == int(head.split(":")[0]) and report.legacy_entries == 0
    assert "cannot be detected" in _verify(root).notes[0]


def _entry_id(root: Path, action: str, nth: int = 0) -> int:
    conn = sqlite3.connect(root / "data" / CATALOGUE_FILENAME)
    ids = [r[0] for r in conn.execute("SELECT id FROM audit_log WHERE action = ? ORDER BY id", (action,))]
    conn.close()
    return ids[nth]


def test_an_edited_entry_is_named(copy):
    root, head = copy
    target = _entry_id(root, "search")
    conn = _raw(root)
    details = json.loads(conn.execute("SELECT details FROM audit_log WHERE id = ?", (target,)).fetchone()[0])
    details["reason"] = "routine check"  # rewrite the justification after the fact
    conn.execute("UPDATE audit_log SET details = ? WHERE id = ?", (json.dumps(details, sort_keys=True), target))
    conn.close()
    report = _verify(root, head)
    assert not report.ok
    assert report.findings[0] == f"entry {target}: its content no longer matches its MAC: edited"


def test_a_deleted_entry_is_named(copy):
    root, head = copy
    target = _entry_id(root, "decision")
    _raw(root).execute("DELETE FROM audit_log WHERE id = ?", (target,))
    report = _verify(root, head)
    assert report.findings[0] == f"entry {target} is missing: deleted from the log"
    assert "decision 1 has no verified audit entry: inserted outside facematch" in report.findings


def test_an_inserted_entry_is_named(copy):
    root, head = copy
    last = int(head.split(":")[0])
    conn = _raw(root)
    forged_mac = conn.execute("SELECT mac FROM audit_log WHERE id = ?", (last,)).fetchone()[0]
    conn.execute("INSERT INTO audit_log (id, at, actor, action, details, mac) VALUES (?, ?, ?, ?, ?, ?)",
                 (last + 1, "2026-01-01T00:00:00+00:00", "PC1", "review", '{"reason": "x", "search_id": 1}',
                  forged_mac))
    conn.execute("INSERT INTO audit_log (id, at, actor, action, details) VALUES (?, ?, ?, ?, ?)",
                 (last + 2, "2026-01-01T00:00:00+00:00", "PC1", "review", '{}'))
    conn.close()
    report = _verify(root, head)
    assert report.findings[:2] == [f"entry {last + 1}: it does not match the chain: edited, forged or moved",
                                   f"entry {last + 2} has no MAC: inserted outside facematch"]


def test_reordered_entries_are_named(copy):
    root, head = copy
    a, b = _entry_id(root, "decision", 0), _entry_id(root, "review")
    conn = _raw(root)
    cols = "at, actor, action, details, mac"
    row_a = conn.execute(f"SELECT {cols} FROM audit_log WHERE id = ?", (a,)).fetchone()
    row_b = conn.execute(f"SELECT {cols} FROM audit_log WHERE id = ?", (b,)).fetchone()
    update = "UPDATE audit_log SET at = ?, actor = ?, action = ?, details = ?, mac = ? WHERE id = ?"
    conn.execute(update, (*row_b, a))
    conn.execute(update, (*row_a, b))
    conn.close()
    report = _verify(root, head)
    assert report.findings[0] == f"entry {a} holds the content of entry {b}: entries reordered"
    assert f"entry {b} holds the content of entry {a}: entries reordered" in report.findings


def test_a_truncated_tail_is_found_against_an_exported_head(copy):
    root, head = copy
    last = int(head.split(":")[0])
    _raw(root).execute("DELETE FROM audit_log WHERE id > ?", (last - 2,))  # the export and the last decision
    # without the head, only the decision row left without its entry shows
    assert _verify(root).findings == ["decision 2 has no verified audit entry: inserted outside facematch"]
    (root / "head.txt").write_text(head + "\n")
    report = _verify(root, str(root / "head.txt"))
    assert report.findings[0] == (f"the log ends at entry {last - 2}, before the exported head {last}: "
                                  "the newest entries were removed (truncated)")


def test_truncation_alone_is_only_visible_with_the_head(copy):
    """Removing only entries that record no stored row (a viewing, an export) leaves a valid chain."""
    root, head = copy
    with make_facematch(root) as fm:
        fm.review(1, user="x", reason="looking")
        later = fm.audit_head()
    _raw(root).execute("DELETE FROM audit_log WHERE id = ?", (int(later.split(":")[0]),))
    assert _verify(root).ok
    report = _verify(root, later)
    assert not report.ok and report.findings[0].endswith("the newest entries were removed (truncated)")
    r = CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--index-dir", str(root / "indexes"),
                                 "audit", "verify", "--head", later])
    assert r.exit_code == 1 and f"FAIL the log ends at entry {int(later.split(':')[0]) - 1}" in r.output
    assert "error: audit verification failed: 1 finding(s)" in r.output


def test_stored_rows_edited_after_the_fact_are_found(copy):
    root, head = copy
    conn = sqlite3.connect(root / "data" / CATALOGUE_FILENAME, isolation_level=None)
    conn.execute("UPDATE decisions SET decision = 'rejected' WHERE id = 1")
    conn.execute("UPDATE searches SET reason = 'routine check' WHERE id = 2")
    conn.execute("INSERT INTO searches (created_at, user, case_ref, reason, params, bands, gallery_subjects, "
                 "gallery_faces) VALUES ('2026-01-01', 'x', NULL, 'x', '{}', '{}', 1, 1)")
    conn.close()
    report = _verify(root, head)
    assert report.findings == ["search 2: its stored rows were changed after it was audited",
                               "search 3 has no verified audit entry: inserted outside facematch",
                               "decision 1: its stored rows were changed after it was audited"]


def test_a_candidate_row_edited_after_the_fact_is_found(copy):
    root, head = copy
    conn = sqlite3.connect(root / "data" / CATALOGUE_FILENAME, isolation_level=None)
    conn.execute("UPDATE candidates SET distance = distance + 0.3 WHERE search_id = 1 AND rank = 1")
    conn.close()
    assert _verify(root, head).findings == ["search 1: its stored rows were changed after it was audited"]


def test_another_key_verifies_nothing_and_a_missing_key_stops_searches(copy):
    root, head = copy
    key_file = root / "data" / "keys" / "audit.key"
    key_file.write_text("00" * 32 + "\n")
    report = _verify(root, head)
    assert len(report.findings) == 1 and "not the key this chain was made with" in report.findings[0]
    key_file.unlink()
    with make_facematch(root) as fm, pytest.raises(Exception, match="audit key .* is missing"):
        fm.verify_audit()


def test_an_existing_catalogue_is_chained_at_migration(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / CATALOGUE_FILENAME, isolation_level=None)
    for statement in MIGRATIONS[0] + MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    for n in range(3):
        conn.execute("INSERT INTO audit_log (at, actor, action, details) VALUES (?, 'old', 'search', ?)",
                     (f"2025-01-0{n + 1}T00:00:00+00:00", json.dumps({"search_id": n + 1})))
    conn.close()
    with Catalogue(data) as cat:
        start = cat.audit_entries(action="audit.chain_start")[0]
        assert start["id"] == 4 and start["details"]["legacy_entries"] == 3
        assert cat.verify_audit().ok
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # a sealed MAC cannot be reset
            cat.conn.execute("UPDATE audit_log SET mac = NULL WHERE id = 1")
    raw = _raw(tmp_path)
    raw.execute("UPDATE audit_log SET actor = 'someone' WHERE id = 2")
    raw.close()
    with Catalogue(data) as cat:
        assert cat.verify_audit().findings == ["entry 2: its content no longer matches its MAC: edited"]


def test_a_search_needs_a_reason_and_viewing_and_reading_are_audited(copy):
    root, _ = copy
    from facematch.errors import InvalidArgument

    with make_facematch(root) as fm:
        for call in (lambda: fm.search(["a.jpg"]), lambda: fm.search(["a.jpg"], reason="  "),
                     lambda: fm.review(1), lambda: fm.audit(), lambda: fm.export(1, output=root / "x.json",
                                                                                  reason="r")):
            with pytest.raises(InvalidArgument, match="required"):
                call()
        fm.audit(reason="supervision", user="insp-grey", action="search")
        entry = fm.catalogue.audit_entries(limit=1)[0]
        assert (entry["actor"], entry["action"], entry["details"]["reason"]) == ("insp-grey", "audit.read",
                                                                                 "supervision")
        review = fm.catalogue.audit_entries(action="review")[0]
        assert review["actor"] == "sgt-brown" and review["details"] == {"reason": "supervision", "search_id": 1}
        assert fm.verify_audit().ok


def test_an_export_is_audited_with_its_recipient(pristine):
    root, _ = pristine
    entry = next(e for e in Catalogue(root / "data").audit_entries(action="export"))
    exported = (root / "export.json").read_bytes()
    assert entry["details"]["recipient"] == "CPS" and entry["details"]["reason"] == "case file"
    assert entry["details"]["sha256"] == __import__("hashlib").sha256(exported).hexdigest()
    assert json.loads(exported)["disclosure"]["recipient"] == "CPS"
    assert json.loads(exported)["decisions"][0]["decision"] == "confirmed"
    assert (root / "export.json").stat().st_mode & 0o777 == 0o600


def test_an_erasure_entry_keeps_no_subject_reference_or_path(copy):
    root, head = copy
    with make_facematch(root) as fm:
        assert fm.delete_subject("eileen-collins", user="records", reason="retention ended") == 1
        entry = fm.catalogue.audit_entries(action="retention.delete_subject")[0]
        key = fm.catalogue.audit_key()
        report = fm.verify_audit(head=head)
    text = json.dumps(entry["details"])
    assert "eileen" not in text and "astronaut" not in text and str(root) not in text
    assert entry["details"]["subject_hmac"] == audit_chain.pseudonym(key, "subject", "eileen-collins")
    assert entry["details"]["faces"] == 1 and entry["details"]["reason"] == "retention ended"
    assert len(entry["details"]["deletion_ref"]) == 32
    assert report.ok, report.findings  # candidates lose their face link (SET NULL) without breaking digests


def test_every_file_is_private_under_umask_022(tmp_path, astronaut):
    import os

    old = os.umask(0o022)
    try:
        folder = tmp_path / "in" / "someone"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
        with make_facematch(tmp_path / "deep" / "root") as fm:
            fm.ingest_custody(tmp_path / "in")
            search_id = fm.search([folder / "a.png"], reason="permissions", top=1).search_id
            fm.export(search_id, output=tmp_path / "out.json", recipient="CPS", reason="test")
            data, indexes = fm.settings.data_dir, fm.settings.index_dir
            files = [p for p in [*data.rglob("*"), *indexes.rglob("*")] if p.is_file()]
            folders = [data, data / "keys", indexes, *[p for p in indexes.rglob("*") if p.is_dir()]]
            modes = {str(p): oct(p.stat().st_mode & 0o777) for p in [*files, tmp_path / "out.json"]}
            assert {p.name for p in files} >= {"catalogue.sqlite3", "catalogue.sqlite3-wal", "audit.key",
                                               "custody.faiss", "custody.json"}
            assert set(modes.values()) == {"0o600"}, modes
            assert {oct(p.stat().st_mode & 0o777) for p in folders} == {"0o700"}
    finally:
        os.umask(old)


def test_a_shared_data_directory_is_warned_about(tmp_path, caplog):
    import subprocess
    import sys

    data = tmp_path / "shared-data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    with caplog.at_level("WARNING"):
        Catalogue(data).close()
    assert f"data directory {data} is open to other accounts (mode 0755)" in caplog.text
    assert data.stat().st_mode & 0o777 == 0o755  # an existing folder is the administrator's: warned, not changed
    run = subprocess.run([sys.executable, "-m", "facematch", "--data-dir", str(data), "--index-dir",
                          str(tmp_path / "idx"), "index", "status"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert run.returncode == 0 and "is open to other accounts (mode 0755)" in run.stderr
    assert f"chmod 700 {data}" in run.stderr


def test_a_key_is_never_replaced_and_modes_are_only_narrowed(tmp_path):
    key_file = tmp_path / "secrets" / "audit.key"
    first = audit_chain.create_key(key_file)
    assert audit_chain.create_key(key_file) == first  # a second start reads the existing key
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700 and key_file.stat().st_mode & 0o777 == 0o600
    from facematch.store.private_files import restrict_file, write_private_file

    assert not write_private_file(key_file, b"other", exclusive=True) and audit_chain.read_key(key_file) == first
    key_file.chmod(0o444)
    restrict_file(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o400  # read-only stays read-only: group/other bits removed only


def test_reviews_are_checked_against_the_chain_old_entries_included(copy):
    """A review entry holds its row's digest; one written before that (note in clear) vouches for its row's
    reviewer, decision and note. Either way an edited or inserted review row is found."""
    root, head = copy
    with make_facematch(root) as fm:
        fm.review_candidate(1, 1, 1, reviewer="PC3", decision="possible match", note="same ears")
        cat = fm.catalogue
        with cat.atomic():  # what record_review wrote before reviews had a digest
            cand = cat.conn.execute("SELECT id FROM candidates WHERE search_id = 2 AND rank = 1").fetchone()[0]
            cat.conn.execute("INSERT INTO reviews (candidate_id, stage, reviewer, decision, note, decided_at) "
                             "VALUES (?, 1, 'PC4', 'inconclusive', 'profile only', '2026-11-01T00:00:00+00:00')",
                             (cand,))
            cat.audit("PC4", "review.first", {"search_id": 2, "probe": 1, "list": "custody", "rank": 1,
                                              "candidate": "eileen-collins", "decision": "inconclusive",
                                              "note": "profile only", "outcome": "awaiting second review"})
        assert "note" not in cat.audit_entries(action="review.first")[1]["details"]
        assert fm.verify_audit().ok
    conn = sqlite3.connect(root / "data" / CATALOGUE_FILENAME, isolation_level=None)
    conn.execute("DROP TRIGGER reviews_no_update")
    conn.execute("UPDATE reviews SET note = 'same ears, confirmed' WHERE reviewer = 'PC3'")
    conn.execute("UPDATE reviews SET decision = 'possible match' WHERE reviewer = 'PC4'")
    conn.execute("INSERT INTO reviews (candidate_id, stage, reviewer, decision, note, decided_at) "
                 "VALUES (?, 2, 'PC5', 'possible match', 'x', '2026-11-01T00:00:00+00:00')", (cand,))
    conn.close()
    assert _verify(root).findings == ["review 1: its stored rows were changed after it was audited",
                                      "review 2: its stored rows were changed after it was audited",
                                      "review 3 has no verified audit entry: inserted outside facematch"]


def test_an_entry_that_is_not_json_neither_breaks_the_audit_indexes_nor_hides(copy):
    """Schema v9 indexes values inside the details: an entry written outside facematch with details that are
    not JSON must not stop the catalogue from opening or the next entry from being written."""
    root, _ = copy
    conn = _raw(root)
    last = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
    conn.execute("INSERT INTO audit_log (id, at, actor, action, details) VALUES (?, '2026-01-01', 'x', 'y', 'no json')",
                 (last + 1,))
    conn.close()
    with make_facematch(root) as fm:
        fm.review(1, user="sgt-brown", reason="after the odd entry")
        findings = fm.verify_audit().findings
    assert findings == [f"entry {last + 1} has no MAC: inserted outside facematch"]
