"""The Python API: mirrors the CLI, is safe for concurrent searches during ingest, runs the demo."""

import inspect
import shutil
import threading

import click
from conftest import make_facematch, require_data

from facematch import Facematch
from facematch import __all__ as public
from facematch.cli import demo as demo_module
from facematch.cli.commands import cli

# CLI command -> API method; options that only shape CLI output have no API parameter.
_MIRRORS = {("ingest", "custody"): "ingest_custody", ("ingest", "scene"): "ingest_scene",
            ("search",): "search", ("review",): "review", ("decide",): "decide",
            ("delete", "subject"): "delete_subject", ("delete", "case"): "delete_case",
            ("export",): "export", ("audit",): "audit", ("audit", "verify"): "verify_audit"}
_CLI_ONLY = {"as_json", "help", "list_"}


def _command(path):
    command = cli
    for name in path:
        command = command.commands[name]
    return command


def test_api_methods_take_the_cli_parameters_by_the_same_names():
    for path, method in _MIRRORS.items():
        cli_names = {p.name for p in _command(path).params} - _CLI_ONLY
        api_names = set(inspect.signature(getattr(Facematch, method)).parameters) - {"self", "progress"}
        assert cli_names <= api_names, (path, cli_names - api_names)


def test_public_surface_is_declared():
    import facematch

    for name in public:
        assert hasattr(facematch, name), name
    assert "Facematch" in public and "SearchResult" in public


def test_searches_run_while_an_ingest_writes(tmp_path):
    mugshots = require_data("frmdb-dev", "mugshots")
    fm = make_facematch(tmp_path)
    first = tmp_path / "first"
    (first / "040").mkdir(parents=True)
    shutil.copy(mugshots / "040" / "Img_33.jpg", first / "040")
    fm.ingest_custody(first)
    later = tmp_path / "later"
    for s in ("041", "042", "043", "044"):
        (later / s).mkdir(parents=True)
        shutil.copy(mugshots / s / "Img_33.jpg", later / s)
    errors, results = [], []

    def ingest():
        try:
            writer = Facematch(settings=fm.settings)
            writer.ingest_custody(later, batch_size=1)
        except Exception as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=ingest)
    thread.start()
    while thread.is_alive() or len(results) < 3:
        result = fm.search([mugshots / "040" / "Img_34.jpg"], top=3, reason="test")
        results.append(result.probes[0].subjects[0].subject)
    thread.join()
    assert errors == []
    assert set(results) == {"040"}  # every search, mid-ingest or not, saw a consistent index
    assert fm.search([mugshots / "044" / "Img_34.jpg"], top=1, reason="test").probes[0].subjects[0].subject == "044"


def test_demo_falls_back_to_the_packaged_face_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_module, "find_data_root", lambda explicit=None: None)
    lines = []
    fm = make_facematch(tmp_path)
    demo_module.run_demo(fm.settings, echo=lines.append)
    text = "\n".join(lines)
    assert "using scikit-image's astronaut photograph" in text
    assert "true identity: astronaut-eileen-collins; found at rank 1" in text
    assert click.unstyle(text) == text
