"""One writer at a time, and an index that proves what it holds: real processes on real faces.

Concurrent ingests, an ingest/delete/ingest race, a process killed inside an index save, a failed index
update after a deletion, a planted vector, and a second writer that waits then gives up.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, make_facematch, require_data

from facematch.store.index import FaceIndex
from facematch.store.index_files import FAULT_VARIABLE

FRONTAL = ("Img_33.jpg", "Img_23.jpg")
FOUR_VIEWS = ("Img_33.jpg", "Img_23.jpg", "Img_43.jpg", "Img_32.jpg")


def _manifest(path, subjects, views=FRONTAL):
    mugshots = require_data("frmdb-dev", "mugshots")
    path.write_text("path,subject_id\n" + "".join(f"{mugshots / s / v},{s}\n" for s in subjects for v in views))
    return path


def _cli(root, *args, wait=None):
    cmd = [sys.executable, "-m", "facematch", "--data-dir", str(root / "data"), "--index-dir", str(root / "indexes")]
    return cmd + (["--wait", str(wait)] if wait is not None else []) + [str(a) for a in args]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != FAULT_VARIABLE}
    return env | {"PYTHONPATH": str(REPO)} | extra


def _ingest_cmd(root, manifest, batch_size=1):
    return _cli(root, "ingest", "custody", manifest, "--workers", "1", "--batch-size", batch_size)


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def _index_file_ids(fm, kind="custody"):
    """The ids in the index FILE as saved (not repaired by an open)."""
    return FaceIndex.load(fm.index_store.path(kind))[0].ids().tolist()


def _catalogue_ids(fm, kind="custody"):
    return fm.catalogue.face_ids(kind).tolist()


def _subject_face_ids(fm, subject):
    return [r[0] for r in fm.catalogue.conn.execute(
        "SELECT f.id FROM faces f JOIN subjects s ON s.id = f.subject_id WHERE s.reference = ?", (subject,))]


def _top_subject(fm, image):
    return fm.search([image], top=3, reason="test").probes[0].subjects[0]


def _wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_two_concurrent_ingest_processes_leave_catalogue_and_index_identical(tmp_path):
    mugshots = require_data("frmdb-dev", "mugshots")
    a = _manifest(tmp_path / "a.csv", ["040", "041", "042", "043"])
    b = _manifest(tmp_path / "b.csv", ["044", "045", "046", "047"])
    procs = [subprocess.Popen(_ingest_cmd(tmp_path, m), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for m in (a, b)]
    results = [_finish(p) for p in procs]
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    fm = make_facematch(tmp_path)
    images = fm.catalogue.conn.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM images").fetchone()
    assert tuple(images) == (16, 16)
    catalogue_ids = _catalogue_ids(fm)
    assert len(catalogue_ids) >= 14
    assert _index_file_ids(fm) == catalogue_ids  # the saved file, before any open repairs it
    assert fm.verify_index()["custody"]["ok"]
    assert fm.index_status()["custody"] == f"ok ({len(catalogue_ids)} faces)"
    for subject in ("040", "047"):  # searches work without a rebuild
        assert _top_subject(fm, mugshots / subject / "Img_34.jpg").subject == subject


def test_ingest_delete_ingest_race_leaves_no_deleted_face_and_loses_no_enrolled_one(tmp_path):
    mugshots = require_data("frmdb-dev", "mugshots")
    fm = make_facematch(tmp_path)
    fm.ingest_custody(_manifest(tmp_path / "doomed.csv", ["050"], FOUR_VIEWS))
    doomed = _subject_face_ids(fm, "050")
    assert len(doomed) == 4
    first = subprocess.Popen(_ingest_cmd(tmp_path, _manifest(tmp_path / "a.csv", ["051", "052", "053", "054"])),
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_for(lambda: fm.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] >= 6)
    delete = subprocess.Popen(_cli(tmp_path, "delete", "subject", "050", "--reason", "race test"), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.Popen(_ingest_cmd(tmp_path, _manifest(tmp_path / "b.csv", ["055", "056"])), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {name: _finish(p) for name, p in (("first", first), ("delete", delete), ("second", second))}
    assert {name: r[0] for name, r in results.items()} == {"first": 0, "delete": 0, "second": 0}, results
    assert "Deleted subject 050: 4 faces removed" in results["delete"][1]
    file_ids = _index_file_ids(fm)
    assert not set(doomed) & set(file_ids)
    assert file_ids == _catalogue_ids(fm)
    assert fm.verify_index()["custody"]["ok"]
    assert fm.index_status()["custody"] == f"ok ({len(file_ids)} faces)"
    for subject in ("051", "054", "056"):  # enrolled people are found with their own photo
        top = _top_subject(fm, mugshots / subject / "Img_33.jpg")
        # the same image: probe and custody detection differ slightly, and a probe's descriptor averages
        # jittered and mirrored chips (custody's does not): ~0.1, against ~0.4+ for the next person
        assert top.subject == subject and top.distance < 0.15
    assert all(c.subject != "050" for c in fm.search([mugshots / "050" / "Img_33.jpg"], top=5, reason="test").probes[0].subjects)


@pytest.mark.parametrize("point", ["index-save-written", "index-save-renamed"])
def test_kill_inside_an_index_save_is_repaired_on_next_open(tmp_path, point, caplog):
    """SIGKILL with the new files written but not renamed, or with the index renamed but not its sidecar."""
    mugshots = require_data("frmdb-dev", "mugshots")
    fm = make_facematch(tmp_path)
    fm.ingest_custody(_manifest(tmp_path / "a.csv", ["040"]))
    killed = subprocess.run(_ingest_cmd(tmp_path, _manifest(tmp_path / "b.csv", ["041", "042"]), batch_size=4),
                            env=_env(**{FAULT_VARIABLE: point}), capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    folder = fm.index_store.folder
    assert list(folder.glob(".*.tmp")), "the kill should leave temporary files behind"
    catalogue_ids = _catalogue_ids(fm)
    assert len(catalogue_ids) == 6  # the batch committed before the index save was killed
    status = fm.index_status()["custody"]
    assert not status.startswith("ok"), status
    with caplog.at_level(logging.INFO, logger="facematch"):
        assert _top_subject(fm, mugshots / "042" / "Img_33.jpg").subject == "042"
    log = caplog.text
    assert "temporary file(s) left by an interrupted index save" in log
    assert ("caught up with 4 face(s)" in log) if point == "index-save-written" else ("rebuilding" in log)
    assert not list(folder.glob(".*.tmp"))
    assert _index_file_ids(fm) == catalogue_ids and fm.verify_index()["custody"]["ok"]
    # the killed run is shown as interrupted; a re-run stores nothing twice
    rerun = subprocess.run(_ingest_cmd(tmp_path, tmp_path / "b.csv"), env=_env(), capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    runs = fm.catalogue.conn.execute("SELECT id, status FROM ingest_runs ORDER BY id").fetchall()
    assert [r["status"] for r in runs] == ["finished", "interrupted", "finished"]
    audit = subprocess.run(_cli(tmp_path, "audit", "--action", "ingest.interrupted", "--reason", "test"), env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert f'"run_id": {runs[1]["id"]}' in audit.stdout
    assert _catalogue_ids(fm) == catalogue_ids == _index_file_ids(fm)


def test_delete_whose_index_update_fails_still_succeeds_and_the_index_is_repaired(tmp_path, caplog):
    mugshots = require_data("frmdb-dev", "mugshots")
    fm = make_facematch(tmp_path)
    fm.ingest_custody(_manifest(tmp_path / "a.csv", ["040", "041"], FOUR_VIEWS))
    doomed = _subject_face_ids(fm, "041")
    delete = subprocess.run(_cli(tmp_path, "delete", "subject", "041", "--reason", "retention ended"),
                            env=_env(**{FAULT_VARIABLE: "index-save-written:raise"}), capture_output=True,
                            text=True, timeout=120)
    assert delete.returncode == 0, delete.stderr
    assert "Deleted subject 041: 4 faces removed" in delete.stdout
    assert "marked stale" in delete.stderr
    assert set(doomed) <= set(_index_file_ids(fm))  # the save failed: the file still holds them ...
    assert "holds 4 face(s) the catalogue no longer has" in fm.index_status()["custody"]
    with caplog.at_level(logging.WARNING, logger="facematch"):  # ... until the next open repairs it
        candidates = fm.search([mugshots / "041" / "Img_33.jpg"], top=5, reason="test").probes[0].subjects
    assert all(c.subject != "041" for c in candidates)
    assert "marked stale" in caplog.text and "removed 4 face(s) the catalogue no longer has" in caplog.text
    assert _index_file_ids(fm) == _catalogue_ids(fm)
    assert not (fm.index_store.folder / "custody.stale").exists()


def test_a_planted_vector_is_named_by_verify_and_replaced_on_open(tmp_path, caplog):
    mugshots = require_data("frmdb-dev", "mugshots")
    fm = make_facematch(tmp_path)
    fm.ingest_custody(_manifest(tmp_path / "a.csv", ["040", "041", "042"]))
    victim, source = _subject_face_ids(fm, "041")[0], _subject_face_ids(fm, "040")[0]
    path = fm.index_store.path("custody")
    index, sidecar = FaceIndex.load(path)  # plant 040's vector under a face id of 041, saved properly
    planted = index.vectors(np.array([source]))
    index.remove(np.array([victim]))
    index.add(np.array([victim]), planted)
    index.save(path, {k: v for k, v in sidecar.items() if k != "index"})
    verify = subprocess.run(_cli(tmp_path, "index", "verify"), env=_env(), capture_output=True, text=True,
                            timeout=120)
    assert verify.returncode == 1
    assert f"1 face id(s) vector differs from the catalogue's embedding: {victim}" in verify.stdout
    assert verify.stderr.strip() == "error: the custody index differs from the catalogue (see above)"
    assert f"vector(s) differ from the catalogue's embeddings (face ids {victim})" in fm.index_status()["custody"]
    with caplog.at_level(logging.WARNING, logger="facematch"):
        candidates = fm.search([mugshots / "040" / "Img_33.jpg"], top=5, reason="test").probes[0].subjects
    assert f"replaced 1 vector(s) that differed from the catalogue's embeddings (face ids {victim})" in caplog.text
    assert candidates[0].subject == "040" and candidates[0].distance < 0.15  # itself (a probe is augmented: ~0.11)
    assert all(c.distance > 0.2 for c in candidates if c.subject == "041")  # not the planted 0.000
    assert fm.verify_index()["custody"]["ok"]  # the repair was saved


def test_a_second_writer_waits_then_gives_up_with_a_clear_message(tmp_path):
    fm = make_facematch(tmp_path)
    fm.ingest_custody(_manifest(tmp_path / "a.csv", ["040"]))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from facematch.store.lock import WriterLock\n"
         "with WriterLock(sys.argv[1], 'ingest', wait_s=0):\n    print('held', flush=True); time.sleep(600)",
         str(tmp_path / "data")], env=_env(), stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    started = time.monotonic()
    refused = subprocess.run(_cli(tmp_path, "delete", "subject", "040", "--reason", "r", wait=2), env=_env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and time.monotonic() - started >= 2
    assert f"waiting for another writer (pid {holder.pid}, ingest since " in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: another writer is using {tmp_path / 'data'} (pid {holder.pid}, ingest since ")
    assert last.endswith("gave up waiting after 2 s (wait longer with --wait SECONDS)")
    assert fm.catalogue.subject_id("040") is not None  # nothing was deleted
    # a waiting writer goes ahead as soon as the holder's process dies (the kernel drops its lock)
    err_file = tmp_path / "waiting.err"
    with open(err_file, "w") as err:
        waiting = subprocess.Popen(_cli(tmp_path, "delete", "subject", "040", "--reason", "r", wait=120),
                                   env=_env(), stdout=subprocess.PIPE, stderr=err)
    assert _wait_for(lambda: "waiting for another writer" in err_file.read_text())
    time.sleep(1)
    assert waiting.poll() is None  # still waiting
    holder.kill()
    holder.wait()
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and "Deleted subject 040" in out.decode(), err_file.read_text()
    assert fm.verify_index()["custody"]["ok"] and _catalogue_ids(fm) == []


def test_readers_are_not_blocked_by_a_writer(tmp_path):
    """A search runs (and answers) while another process holds the writer lock."""
    mugshots = require_data("frmdb-dev", "mugshots")
    fm = make_facematch(tmp_path)
    fm.ingest_custody(_manifest(tmp_path / "a.csv", ["040", "041"]))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from facematch.store.lock import WriterLock\n"
         "with WriterLock(sys.argv[1], 'ingest', wait_s=0):\n    print('held', flush=True); time.sleep(600)",
         str(tmp_path / "data")], env=_env(), stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        search = subprocess.run(_cli(tmp_path, "search", mugshots / "041" / "Img_34.jpg", "--reason", "test", "--json", wait=0),
                                env=_env(), capture_output=True, text=True, timeout=120)
        assert search.returncode == 0, search.stderr
        assert json.loads(search.stdout)["probes"][0]["subjects"][0]["subject"] == "041"
    finally:
        holder.kill()
        holder.wait()


# -- without face data: the lock within one process, and face ids SQLite reuses --------------------------

def _synthetic_face(seed):
    from facematch.types import FaceBox, FaceRecord

    rng = np.random.default_rng(seed)
    return FaceRecord(box=FaceBox(1, 2, 30, 40), detector="hog", confidence=1.0,
                      landmarks=rng.random((5, 2), dtype=np.float32), embedding=rng.random(128, dtype=np.float32),
                      quality={"score": 50.0}, quality_score=50.0)


def _enrol(catalogue, subject, seed):
    with catalogue.atomic():
        sid = catalogue.subject_id(subject, create=True)
        image = catalogue.add_image(sha256=f"{seed:064x}", kind="custody", original_path=f"/{seed}.jpg",
                                    outcome="enrolled", reason=None, subject_id=sid)
        return catalogue.add_face(image, "custody", 0, _synthetic_face(seed), model_name="m", model_version="v",
                                  subject_id=sid)


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    import threading

    from facematch.errors import WriterBusy
    from facematch.store.lock import WriterLock

    seen = []

    def other_thread():
        seen.append(WriterLock(tmp_path, "x", wait_s=0).try_acquire())
        try:
            with WriterLock(tmp_path, "delete", wait_s=0.2):
                seen.append("acquired")
        except WriterBusy as exc:
            seen.append(str(exc))

    with WriterLock(tmp_path, "ingest", wait_s=0), WriterLock(tmp_path, "delete", wait_s=0):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen[0] is False
    assert f"(pid {os.getpid()}, ingest since " in seen[1] and "gave up waiting after 0.2 s" in seen[1]
    lock = WriterLock(tmp_path, "later", wait_s=0)
    assert lock.try_acquire()  # released by the outer exit, not by the inner one
    lock.release()


def test_a_face_id_reused_after_a_deletion_behind_the_index_is_caught(tmp_path, caplog):
    """SQLite reuses the highest rowid once it is deleted: the id set then matches but the vector does not."""
    from facematch.settings import Settings
    from facematch.store.catalogue import Catalogue
    from facematch.store.index_store import IndexStore

    catalogue = Catalogue(tmp_path / "data")
    no_routine_check = Settings(index_verify_full_max=0, index_verify_sample=0)  # only the deletions trigger it
    store = IndexStore(catalogue, tmp_path / "indexes", no_routine_check)
    for seed, subject in enumerate(("A", "B", "C")):
        _enrol(catalogue, subject, seed)
    store.rebuild("custody")
    last = catalogue.delete_subject("C", actor="t", reason="t")  # the index is not told
    reused = _enrol(catalogue, "D", 99)
    assert [reused] == last  # the same id, another person
    assert store.status("custody").differing == [reused]
    with caplog.at_level(logging.WARNING, logger="facematch"):
        index = store.load("custody")
    assert f"replaced 1 vector(s) that differed from the catalogue's embeddings (face ids {reused})" in caplog.text
    assert np.array_equal(index.vectors(np.array([reused]))[0], catalogue.embeddings([reused])[reused])
    assert store.verify("custody").ok
