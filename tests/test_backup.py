"""Backup while the catalogue is in use, restore into an emptied data directory, and the doctor's report."""

import json
import os
import shutil
import sqlite3
import threading

import pytest
from click.testing import CliRunner
from conftest import make_facematch, require_data

from facematch.cli.commands import cli
from facematch.errors import InvalidArgument
from facematch.settings import DetectionSettings


@pytest.fixture
def gallery_root(frmdb_gallery, tmp_path):
    _, _, root = frmdb_gallery
    shutil.copytree(root, tmp_path / "g")
    return tmp_path / "g"


def _cli(root, args):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--index-dir", str(root / "indexes"), *args])


def _leads(result):
    return [(c.subject, round(c.distance, 6)) for p in result.probes for c in p.subjects]


def _private(*folders):
    """Owner-only permissions (what the permissions work on the catalogue makes the default)."""
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)


def test_backup_during_searches_then_restore_gives_the_same_results(gallery_root, tmp_path):
    probe = require_data("frmdb-dev", "mugshots", "044", "Img_32.jpg")
    fm = make_facematch(gallery_root)
    before = fm.search([probe], top=5, reason="before backup")
    assert before.probes[0].subjects

    def keep_searching():
        with make_facematch(gallery_root) as other:
            for _ in range(3):
                other.search([probe], top=5, reason="during backup")

    worker = threading.Thread(target=keep_searching)
    worker.start()
    manifest = fm.backup(tmp_path / "backup")
    worker.join()
    assert set(manifest["files"]) == {"catalogue.sqlite3", "audit.key"}
    assert oct((tmp_path / "backup").stat().st_mode & 0o777) == "0o700"
    fm.close()

    shutil.rmtree(gallery_root / "data")
    shutil.rmtree(gallery_root / "indexes")
    r = _cli(gallery_root, ["restore", str(tmp_path / "backup")])
    assert r.exit_code == 0 and "indexes rebuilt" in r.output, r.output
    with make_facematch(gallery_root) as restored:
        after = restored.search([probe], top=5, reason="after restore")
        assert _leads(after) == _leads(before)
        assert restored.review(before.search_id, reason="test")[0].reason == "before backup"
        assert restored.doctor()[1] == {"check": "catalogue integrity", "ok": True, "problems": []}


def test_restore_refuses_a_data_directory_in_use_unless_forced(gallery_root, tmp_path):
    fm = make_facematch(gallery_root)
    fm.backup(tmp_path / "backup")
    with pytest.raises(InvalidArgument, match="backup destination .* is not empty"):
        fm.backup(tmp_path / "backup")
    fm.delete_subject("045", reason="retention ended")
    fm.close()
    r = _cli(gallery_root, ["restore", str(tmp_path / "backup")])
    assert r.exit_code == 1 and "is not empty: restore with --force to replace it" in r.output
    r = _cli(gallery_root, ["restore", str(tmp_path / "backup"), "--force"])
    assert r.exit_code == 0
    with make_facematch(gallery_root) as fm:
        assert fm.catalogue.subject_id("045") is not None  # the backup predates the deletion
    (tmp_path / "backup" / "catalogue.sqlite3").write_bytes(b"not a catalogue")
    r = _cli(gallery_root, ["restore", str(tmp_path / "backup"), "--force"])
    assert r.exit_code == 1 and "does not match its checksum" in r.output


def test_doctor_on_a_healthy_and_a_broken_data_directory(gallery_root):
    _private(gallery_root / "data", gallery_root / "indexes")
    r = _cli(gallery_root, ["doctor"])
    assert r.exit_code == 0, r.output
    assert "permissions          ok" in r.output and "audit log            ok" in r.output

    with make_facematch(gallery_root, detection=DetectionSettings(landmarks="68")) as other:
        model = next(c for c in other.doctor() if c["check"] == "model")
        assert not model["ok"] and "custody faces were embedded with" in model["problems"][0]

    index_folder = next((gallery_root / "indexes").iterdir())
    (index_folder / "custody.faiss").unlink()
    (index_folder / ".custody.faiss.x.tmp").write_bytes(b"")
    os.chmod(gallery_root / "data", 0o755)
    r = _cli(gallery_root, ["doctor", "--json"])
    assert r.exit_code == 1
    failed = {c["check"] for c in json.loads(r.stdout) if not c["ok"]}
    assert failed == {"permissions", "index", "leftover files"}
    assert r.stderr == "error: the data directory has problems (see above)\n"

    conn = sqlite3.connect(gallery_root / "data" / "catalogue.sqlite3", isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_delete")  # as someone with write access to the file could
    last = conn.execute("SELECT MAX(id) FROM audit_log WHERE action = 'ingest.start'").fetchone()[0]
    conn.execute("DELETE FROM audit_log WHERE id = ?", (last,))
    conn.close()
    with make_facematch(gallery_root) as fm:
        audit = next(c for c in fm.doctor() if c["check"] == "audit log")
    assert not audit["ok"] and f"entry {last} is missing" in audit["problems"][0]
