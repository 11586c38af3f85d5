"""Clean input, clean output: control characters and oversized values refused, terminal output escaped,
huge integers a usage error, absolute stored paths, conflicting labels refused, unsearchable searches fail."""

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_facematch

from facematch.cli.commands import cli
from facematch.cli.render import safe
from facematch.errors import InvalidArgument
from facematch.validation import check_text

ESC = "PC1\x1b[2J\x1b[31m"
NEWLINE = "PC1\n     9 2026-01-01T00:00:00+00:00 admin  decision"


def _run(tmp_path, args):
    base = ["--data-dir", str(tmp_path / "data"), "--index-dir", str(tmp_path / "indexes")]
    return CliRunner().invoke(cli, base + args)


def _photo(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def coffee():
    from skimage import data

    return data.coffee()  # a real photograph without a face


@pytest.mark.parametrize("bad", [ESC, NEWLINE, "A\rB", "A\x9bB", "A\u202eB", "A\tB"], ids=repr)
@pytest.mark.parametrize("field, args", [
    ("subject id", ["delete", "subject", "{bad}", "--reason", "r"]),
    ("case ref", ["delete", "case", "{bad}", "--reason", "r"]),
    ("user", ["delete", "subject", "S1", "--reason", "r", "--user", "{bad}"]),
    ("reason", ["delete", "subject", "S1", "--reason", "{bad}"]),
    ("reviewer", ["decide", "1", "1", "--decision", "rejected", "--reviewer", "{bad}"]),
    ("note", ["decide", "1", "1", "--decision", "rejected", "--reviewer", "PC1", "--note", "{bad}"]),
    ("case ref", ["search", "x.png", "--reason", "t", "--case", "{bad}"]),
    ("reason", ["search", "x.png", "--reason", "{bad}"]),
    ("case ref", ["ingest", "scene", ".", "--case", "{bad}"]),
])
def test_control_characters_are_refused_naming_the_field(tmp_path, field, args, bad):
    r = _run(tmp_path, [a.replace("{bad}", bad) for a in args])
    assert r.exit_code == 1, r.output
    assert r.output.startswith(f"error: {field} contains a control character (U+")
    assert "\x1b" not in r.output and r.output.count("\n") == 1


def test_custody_ref_and_subject_id_in_a_manifest_are_refused_per_row(tmp_path, coffee):
    _photo(tmp_path / "a.png", coffee)
    _photo(tmp_path / "b.png", coffee[:400])
    _photo(tmp_path / "c.png", coffee[:350])
    (tmp_path / "m.csv").write_text("path,subject_id,custody_ref\n"
                                    "a.png,S1,CR\x1b[2J\nb.png,S\x07 2,CR-2\nc.png,S3,CR-3\n")
    fm = make_facematch(tmp_path)
    summary = fm.ingest_custody(tmp_path / "m.csv")
    assert summary.invalid_rows == 2 and summary.outcomes == {"no_face": 1}  # the good row goes on
    reasons = [r[0] for r in fm.catalogue.conn.execute("SELECT reason FROM ingest_failures ORDER BY path")]
    assert reasons[0].startswith("custody ref contains a control character (U+001B)")
    assert reasons[1].startswith("subject id contains a control character (U+0007)")
    fm.close()


def test_oversized_values_are_refused(tmp_path):
    r = _run(tmp_path, ["delete", "subject", "x" * 100_000, "--reason", "r"])
    assert r.exit_code == 1 and r.output == "error: subject id is 100000 characters long; the limit is 128\n"
    r = _run(tmp_path, ["delete", "subject", "S1", "--reason", "r" * 2001])
    assert r.exit_code == 1 and r.output == "error: reason is 2001 characters long; the limit is 2000\n"
    with pytest.raises(InvalidArgument, match="subject id has leading or trailing spaces"):
        check_text("subject id", " S1", "id")


@pytest.mark.parametrize("args", [["review", str(2**64), "--reason", "t"], ["decide", str(2**64), "1", "--decision", "rejected",
                                  "--reviewer", "x"], ["decide", "1", str(2**64), "--decision", "rejected",
                                  "--reviewer", "x"], ["audit", "--limit", str(2**64), "--reason", "t"]], ids=lambda a: a[0])
def test_huge_integers_are_usage_errors_not_tracebacks(tmp_path, args):
    r = _run(tmp_path, args)
    assert r.exit_code == 2 and "is not in the range 1<=x<=9223372036854775807" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert _run(tmp_path, ["review", str(2**63 - 1), "--reason", "t"]).output == f"error: no search with id {2**63 - 1}\n"


def test_terminal_output_escapes_stored_control_characters(tmp_path):
    fm = make_facematch(tmp_path)
    with fm.catalogue.atomic():  # as a catalogue written before validation existed might hold
        fm.catalogue.audit("evil\x1b[2J\n    99 forged", "decision\r", {"note": "x\x1by"})
    fm.close()
    r = _run(tmp_path, ["audit", "--reason", "t"])
    assert r.exit_code == 0 and "\x1b" not in r.output and "\r" not in r.output
    # one line per entry (the chain's start, the planted entry, this reading): nothing forged a line
    entries = fm.catalogue.conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    assert r.output.count("\n") == entries == 3 and "evil\\x1b[2J\\n    99 forged" in r.output
    assert safe("ok \u202eevil\x9b") == "ok \\u202eevil\\x9b" and safe("unicodé") == "unicodé"


def test_stored_paths_are_absolute_when_ingesting_from_another_directory(tmp_path, coffee, monkeypatch):
    _photo(tmp_path / "custody" / "S1" / "a.png", coffee)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    fm = make_facematch(tmp_path)
    fm.ingest_custody("../custody")
    (path,) = [r[0] for r in fm.catalogue.conn.execute("SELECT original_path FROM images")]
    assert path == str(tmp_path / "custody" / "S1" / "a.png")
    fm.close()


def test_conflicting_labels_are_refused_unless_relabelling_is_allowed(tmp_path, coffee):
    _photo(tmp_path / "a.png", coffee)
    (tmp_path / "three.csv").write_text("path,subject_id\na.png,S1\na.png,S2\na.png,S3\n")
    fm = make_facematch(tmp_path)
    summary = fm.ingest_custody(tmp_path / "three.csv")
    assert summary.label_conflicts == 3 and summary.processed == 0
    assert fm.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    (tmp_path / "s1.csv").write_text("path,subject_id\na.png,S1\n")
    (tmp_path / "s2.csv").write_text("path,subject_id\na.png,S2\n")
    fm.ingest_custody(tmp_path / "s1.csv")
    r = _run(tmp_path, ["ingest", "custody", str(tmp_path / "s2.csv"), "--workers", "1"])
    assert r.exit_code == 0 and "label conflicts (refused): 1" in r.output
    reason = fm.catalogue.conn.execute("SELECT reason FROM ingest_failures ORDER BY id DESC").fetchone()[0]
    assert reason == "label conflict: the image is stored under subject S1, not S2; refused (--allow-relabel moves it)"
    summary = fm.ingest_custody(tmp_path / "s2.csv", allow_relabel=True)
    assert summary.relabelled == 1
    owners = [r[0] for r in fm.catalogue.conn.execute(
        "SELECT s.reference FROM images i JOIN subjects s ON s.id = i.subject_id")]
    assert owners == ["S2"] and fm.catalogue.subject_id("S1") is None
    assert fm.audit(action="ingest.relabel", reason="test")[0]["details"]["to"] == "S2"
    fm.close()


def test_search_with_no_searchable_probe_exits_1_after_printing(tmp_path, coffee):
    probe = _photo(tmp_path / "coffee.png", coffee)
    r = _run(tmp_path, ["search", str(probe), "--reason", "t", "--json"])
    assert r.exit_code == 1
    assert '"outcome": "no_face"' in r.output
    assert r.output.rstrip().splitlines()[-1].startswith("error: no probe face could be searched (search 1): "
                                                         "no face detected")


def test_api_bounds_integers_too(fm):
    for call in (lambda: fm.review(2**64, reason="test"), lambda: fm.audit(limit=2**64, reason="test"),
                 lambda: fm.decide(1, 2**64, decision="rejected", reviewer="PC1")):
        with pytest.raises(InvalidArgument, match=r"must be at most 9223372036854775807 \(2\*\*63-1\)"):
            call()


def test_account_names_refuse_control_characters(tmp_path):
    r = _run(tmp_path, ["agencies", "add", "north\x1b[2J"])
    assert r.exit_code == 1 and r.output.startswith("error: agency name contains a control character (U+001B)")
    assert _run(tmp_path, ["agencies", "add", "north"]).exit_code == 0
    (tmp_path / "pw").write_text("correct horse battery\n")
    r = _run(tmp_path, ["users", "add", "al\nice", "--agency", "north", "--role", "reviewer",
                        "--password-file", str(tmp_path / "pw")])
    assert r.exit_code == 1 and r.output.startswith("error: username contains a control character (U+000A)")
    assert "\n" not in _run(tmp_path, ["users", "list"]).output
