"""The command line: help with examples everywhere, exact error texts and exit codes, a full workflow."""

import json
import shutil

import click
import pytest
from click.testing import CliRunner
from conftest import REPO, require_data

from facematch.cli.commands import cli


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example_and_is_in_the_readme(path):
    result = CliRunner().invoke(cli, [*path, "-h"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert f"facematch {' '.join(path)}" in (REPO / "README.md").read_text()


def _run(args, tmp_path, **kw):
    base = ["--data-dir", str(tmp_path / "data"), "--index-dir", str(tmp_path / "indexes")]
    return CliRunner().invoke(cli, base + args, catch_exceptions=False, **kw)


def test_errors_are_one_line_with_exit_status(tmp_path):
    r = _run(["ingest", "custody", str(tmp_path / "nowhere")], tmp_path)
    assert r.exit_code == 1 and r.output == f"error: source '{tmp_path / 'nowhere'}' does not exist\n"
    r = _run(["search", str(tmp_path / "x.jpg"), "--reason", "t"], tmp_path)
    assert r.exit_code == 1 and r.output == f"error: probe image '{tmp_path / 'x.jpg'}' does not exist\n"
    r = _run(["review", "99", "--reason", "t"], tmp_path)
    assert r.exit_code == 1 and r.output == "error: no search with id 99\n"
    r = _run(["search", "a.jpg", "--box", "1,2,3", "--reason", "t"], tmp_path)
    assert r.exit_code == 2 and "expected x,y,w,h" in r.output
    r = _run(["decide", "1", "1", "--decision", "maybe", "--reviewer", "x"], tmp_path)
    assert r.exit_code == 2 and "'maybe' is not one of" in r.output
    (tmp_path / "m.csv").write_text("file\nx.jpg\n")
    r = _run(["ingest", "custody", str(tmp_path / "m.csv")], tmp_path)
    assert r.exit_code == 1 and "missing column(s) path, subject_id" in r.output
    r = _run(["ingest", "scene", str(tmp_path)], tmp_path)
    assert r.exit_code == 1 and r.output == "error: a case reference is required for crime-scene images (--case REF)\n"
    for args in (["search", "a.jpg"], ["review", "1"], ["audit"], ["export", "1", "-o", "x.json", "--reason", "r"]):
        r = _run(args, tmp_path)
        assert r.exit_code == 2 and "Missing option" in r.output, args


def test_ingest_search_review_decide_delete_workflow(tmp_path):
    mugshots = require_data("frmdb-dev", "mugshots")
    folder = tmp_path / "custody"
    for s in ("050", "051"):
        (folder / s).mkdir(parents=True)
        for v in ("Img_33.jpg", "Img_43.jpg"):
            shutil.copy(mugshots / s / v, folder / s / v)
    r = _run(["ingest", "custody", str(folder), "--workers", "1", "--json"], tmp_path)
    assert r.exit_code == 0 and json.loads(r.output)["processed"] == 4
    r = _run(["search", str(mugshots / "050" / "Img_32.jpg"), "--case", "OP-1", "--user", "dc1",
              "--reason", "cli test"], tmp_path)
    assert r.exit_code == 0
    assert "investigative leads for review by a trained person" in r.output
    assert "bands are uncalibrated defaults" in r.output
    assert "  1. 050 " in r.output
    r = _run(["search", str(mugshots / "050" / "Img_32.jpg"), "--json", "--top", "1", "--reason", "t"], tmp_path)
    doc = json.loads(r.output)
    search_id = doc["search_id"]
    assert [c["subject"] for c in doc["probes"][0]["subjects"]] == ["050"]
    r = _run(["decide", str(search_id), "1", "--decision", "confirmed", "--reviewer", "PC42", "--note", "ears"],
             tmp_path)
    assert r.exit_code == 0 and "(050) confirmed by PC42" in r.output
    r = _run(["decide", str(search_id), "2", "--decision", "rejected", "--reviewer", "PC42"], tmp_path)
    assert r.exit_code == 1 and r.output == f"error: search {search_id} probe 1 has no custody candidate at rank 2\n"
    r = _run(["review", str(search_id), "--reason", "check leads"], tmp_path)
    assert "CONFIRMED by PC42" in r.output
    r = _run(["audit", "--action", "decision", "--reason", "supervision"], tmp_path)
    assert "PC42" in r.output and '"decision": "confirmed"' in r.output
    r = _run(["delete", "subject", "050", "--reason", "retention ended"], tmp_path)
    assert r.exit_code == 0 and "Deleted subject 050" in r.output
    r = _run(["index", "status"], tmp_path)
    assert "custody: ok (" in r.output
    r = _run(["search", str(mugshots / "050" / "Img_32.jpg"), "--json", "--reason", "t"], tmp_path)
    assert "050" not in [c["subject"] for c in json.loads(r.output)["probes"][0]["subjects"]]
    r = _run(["export", str(search_id), "--recipient", "CPS", "--reason", "case file", "-o",
              str(tmp_path / "out.json")], tmp_path)
    assert r.exit_code == 0 and json.loads((tmp_path / "out.json").read_text())["disclosure"]["recipient"] == "CPS"
    head = _run(["audit", "head"], tmp_path).output.strip()
    r = _run(["audit", "verify", "--head", head], tmp_path)
    assert r.exit_code == 0 and r.output.startswith("ok: ") and head in r.output


def test_account_commands_record_who_and_why(tmp_path):
    """The command line is the system-level administration: agencies, any agency's admin, any sharing."""
    password = tmp_path / "pw.txt"
    password.write_text("correct horse battery\n")
    assert _run(["agencies", "add", "north"], tmp_path).exit_code == 0
    assert _run(["agencies", "add", "south"], tmp_path).exit_code == 0
    r = _run(["users", "add", "adam", "--agency", "north", "--role", "admin", "--password-file", str(password),
              "--user", "root", "--reason", "first admin of north"], tmp_path)
    assert r.exit_code == 0, r.output
    r = _run(["share", "grant", "north-custody", "south", "--user", "root", "--reason", "joint operation"], tmp_path)
    assert r.exit_code == 0 and "sharing agreement 1" in r.output
    assert _run(["share", "revoke", "1", "--user", "root", "--reason", "operation\x07closed"], tmp_path).exit_code != 0
    assert _run(["share", "revoke", "1", "--user", "root", "--reason", "operation closed"], tmp_path).exit_code == 0
    from facematch.api import Facematch
    from facematch.settings import Settings

    with Facematch(settings=Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "indexes")) as fm:
        entries = {e["action"]: e for e in fm.audit(limit=20, reason="test: read the account changes")}
    assert entries["admin.user_add"]["actor"] == "root"
    assert entries["admin.user_add"]["details"]["reason"] == "first admin of north"
    assert entries["share.grant"]["details"]["reason"] == "joint operation"
    assert entries["share.revoke"]["details"]["reason"] == "operation closed"


def test_ingest_scene_with_agency_makes_the_case_that_agencys(tmp_path):
    """`ingest scene --agency`: the images' case belongs to that agency, so the service shows them to it alone."""
    stills = tmp_path / "stills"
    stills.mkdir()
    shutil.copy(require_data("frmdb-dev", "cctv_crops", "043", "Img_01.jpg"), stills / "a.jpg")
    assert _run(["agencies", "add", "north"], tmp_path).exit_code == 0
    r = _run(["ingest", "scene", str(stills), "--case", "OP-1", "--agency", "nowhere"], tmp_path)
    assert r.exit_code == 1 and r.output == "error: no agency 'nowhere'\n"
    r = _run(["ingest", "scene", str(stills), "--case", "OP-1", "--agency", "north", "--json"], tmp_path)
    assert r.exit_code == 0, r.output
    from facematch.api import Facematch
    from facematch.settings import Settings

    with Facematch(settings=Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "indexes")) as fm:
        owners = fm.catalogue.conn.execute("""SELECT k.reference, a.name FROM image_owners o
            JOIN cases k ON k.id = o.case_id JOIN agencies a ON a.id = k.agency_id""").fetchall()
    assert [tuple(r) for r in owners] == [("OP-1", "north")]
