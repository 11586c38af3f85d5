"""The ``facematch`` command line: a thin adapter over :class:`facematch.api.Facematch`.

Each command opens the catalogue, calls one library method and prints the result; the library's named
errors become one-line ``error: ...`` messages with exit status 1 (usage errors exit 2, as Click does).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from facematch.api import CANDIDATE_LISTS, DECISIONS, Facematch
from facematch.cli import render
from facematch.cli.support import CONTEXT, DEFAULTS, parse_box
from facematch.cli.support import fail_cleanly as _fail_cleanly
from facematch.errors import FacematchError
from facematch.settings import Settings

__all__ = ["cli", "main"]


def _open(ctx: click.Context) -> Facematch:
    return Facematch(settings=ctx.obj["settings"])


@click.group(context_settings=CONTEXT)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help=f"Catalogue home [env FACEMATCH_DATA_DIR; default ./{DEFAULTS.data_dir}].")
@click.option("--index-dir", type=click.Path(file_okay=False, path_type=Path),
              help=f"Where index files live [env FACEMATCH_INDEX_DIR; default ./{DEFAULTS.index_dir}].")
@click.option("--wait", "writer_wait_s", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long a write waits while another process writes the same data directory "
                   f"[env FACEMATCH_WRITER_WAIT; default {DEFAULTS.writer_wait_s:g}].")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="facematch")
@click.pass_context
@_fail_cleanly
def cli(ctx, data_dir, index_dir, writer_wait_s, verbose):
    """Retrospective facial-image comparison: ranked investigative leads for trained human review.

    facematch never identifies anyone: every candidate it returns must be reviewed by a trained person.

    \b
    Example:
      facematch ingest custody ./custody-photos
      facematch search ./scene/still.jpg --case OP-HARBOUR --top 10
    """
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"settings": Settings.from_env(data_dir=data_dir, index_dir=index_dir, writer_wait_s=writer_wait_s)}


def _ingest_options(command):
    for option in reversed([
        click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: CPU cores]."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Images per catalogue transaction."),
        click.option("--user", help="Who runs the ingest [default: OS user]."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]):
        command = option(command)
    return command


def _progress_and_run(run, as_json: bool):
    if sys.stderr.isatty() and not as_json:
        bar = click.progressbar(length=1, label="ingesting", file=sys.stderr, show_pos=True)

        def progress(done, total):
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        with bar:
            return run(progress)
    return run(None)


def _print_summary(summary, as_json: bool):
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo("\n".join(render.ingest_lines(summary)))


@cli.group(context_settings=CONTEXT)
def ingest():
    """Ingest custody or crime-scene images (idempotent: re-running skips what is stored).

    \b
    Example:
      facematch ingest custody ./mugshots --workers 2
    """


@ingest.command("custody", context_settings=CONTEXT)
@click.argument("source", type=click.Path(path_type=Path))
@_ingest_options
@click.pass_context
@_fail_cleanly
def ingest_custody(ctx, source, workers, batch_size, user, as_json):
    """Enrol custody images from SOURCE: a <subject_id>/<image> folder or a CSV manifest
    (path,subject_id[,custody_ref,captured_at,source]).

    \b
    Example:
      facematch ingest custody ../shared/data/frmdb-dev/mugshots
    """
    fm = _open(ctx)
    summary = _progress_and_run(lambda p: fm.ingest_custody(
        source, workers=workers, batch_size=batch_size, user=user, progress=p), as_json)
    _print_summary(summary, as_json)


@ingest.command("scene", context_settings=CONTEXT)
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--case", help="Case reference for every image of a folder (manifests may carry case_ref).")
@_ingest_options
@click.pass_context
@_fail_cleanly
def ingest_scene(ctx, source, case, workers, batch_size, user, as_json):
    """Store every face of crime-scene images from SOURCE (a folder tree, or a CSV manifest
    path,case_ref[,captured_at,source]) as unidentified faces.

    \b
    Example:
      facematch ingest scene ./stills --case OP-HARBOUR
    """
    fm = _open(ctx)
    summary = _progress_and_run(lambda p: fm.ingest_scene(
        source, case=case, workers=workers, batch_size=batch_size, user=user, progress=p), as_json)
    _print_summary(summary, as_json)


@cli.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--case", help="Case reference the search is made for (recorded).")
@click.option("--top", type=click.IntRange(min=1), help=f"Candidates per list [default: {DEFAULTS.top}].")
@click.option("--box", callback=parse_box, help="Search only the face in this box: x,y,w,h in pixels.")
@click.option("--user", help="Who runs the search [default: OS user].")
@click.option("--reason", help="Why the search is made (recorded in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (docs/search-json.md).")
@click.pass_context
@_fail_cleanly
def search(ctx, images, case, top, box, user, reason, as_json):
    """Search every face in IMAGES against custody subjects and earlier crime-scene faces.

    \b
    Example:
      facematch search still.jpg --case OP-HARBOUR --reason "suspect at port" --top 10
      facematch search still.jpg --box 410,120,60,60 --json
    """
    result = _open(ctx).search(list(images), case=case, top=top, box=box, user=user, reason=reason)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo("\n".join(render.search_lines(result)))


@cli.command(context_settings=CONTEXT)
@click.argument("search_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the stored search as JSON.")
@click.pass_context
@_fail_cleanly
def review(ctx, search_id, as_json):
    """Show a stored search, its candidates and the decisions recorded on it.

    \b
    Example:
      facematch review 12
    """
    result, decisions = _open(ctx).review(search_id)
    if as_json:
        doc = result.to_dict() | {"decisions": [d.__dict__ for d in decisions]}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo("\n".join(render.search_lines(result, decisions)))


@cli.command(context_settings=CONTEXT)
@click.argument("search_id", type=int)
@click.argument("rank", type=click.IntRange(min=1))
@click.option("--decision", required=True, type=click.Choice(DECISIONS))
@click.option("--reviewer", required=True, help="Reviewer's id (recorded).")
@click.option("--note", help="Free-text note (recorded).")
@click.option("--probe", type=click.IntRange(min=1), help="Probe face row shown by review (when several).")
@click.option("--candidate-list", "--list", "candidate_list", type=click.Choice(CANDIDATE_LISTS), default="custody",
              show_default=True, help="Which list of the probe row the rank is in.")
@click.pass_context
@_fail_cleanly
def decide(ctx, search_id, rank, decision, reviewer, note, probe, candidate_list):
    """Record a trained reviewer's decision on candidate RANK of search SEARCH_ID (audited).

    \b
    Example:
      facematch decide 12 1 --decision rejected --reviewer PC1234 --note "different ear shape"
    """
    d = _open(ctx).decide(search_id, rank, decision=decision, reviewer=reviewer, note=note, probe=probe,
                          candidate_list=candidate_list)
    click.echo(f"Recorded decision {d.decision_id}: search {d.search_id} probe {d.probe_no} {d.list} "
               f"rank {d.rank} ({d.candidate}) {d.decision} by {d.reviewer}")


@cli.group(context_settings=CONTEXT)
def index():
    """Inspect or rebuild the FAISS indexes (derived from the catalogue).

    \b
    Example:
      facematch index status
    """


@index.command("rebuild", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def index_rebuild(ctx):
    """Recreate every index from the catalogue's stored embeddings.

    \b
    Example:
      facematch index rebuild
    """
    counts = _open(ctx).rebuild_index()
    click.echo("Rebuilt: " + ", ".join(f"{kind} {n} faces" for kind, n in counts.items()))


@index.command("status", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def index_status(ctx):
    """Say whether each index matches the catalogue.

    \b
    Example:
      facematch index status
    """
    for kind, text in _open(ctx).index_status().items():
        click.echo(f"{kind}: {text}")


@index.command("verify", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_context
@_fail_cleanly
def index_verify(ctx, as_json):
    """Compare every vector of each index with the catalogue's stored embedding (changes nothing);
    exit status 1 when any face id or vector differs.

    \b
    Example:
      facematch index verify
    """
    report = _open(ctx).verify_index()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo("\n".join(render.verify_lines(report)))
    bad = [kind for kind, check in report.items() if not check["ok"]]
    if bad:
        raise FacematchError(f"the {' and '.join(bad)} index differs from the catalogue (see above)")


@cli.group(context_settings=CONTEXT)
def delete():
    """Delete data whose retention has ended (catalogue and index; audited).

    \b
    Example:
      facematch delete subject 0412-XYZ --reason "retention period ended"
    """


@delete.command("subject", context_settings=CONTEXT)
@click.argument("subject")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.option("--user", help="Who deletes [default: OS user].")
@click.pass_context
@_fail_cleanly
def delete_subject(ctx, subject, reason, user):
    """Delete SUBJECT's custody images, faces and index entries.

    \b
    Example:
      facematch delete subject 040 --reason "no further action: retention ended"
    """
    n = _open(ctx).delete_subject(subject, user=user, reason=reason)
    click.echo(f"Deleted subject {subject}: {n} faces removed from catalogue and index.")


@delete.command("case", context_settings=CONTEXT)
@click.argument("case")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.option("--user", help="Who deletes [default: OS user].")
@click.pass_context
@_fail_cleanly
def delete_case(ctx, case, reason, user):
    """Delete every crime-scene image of CASE with its faces and index entries.

    \b
    Example:
      facematch delete case OP-HARBOUR --reason "case closed"
    """
    n = _open(ctx).delete_case(case, user=user, reason=reason)
    click.echo(f"Deleted case {case}: {n} faces removed from catalogue and index.")


@cli.command(context_settings=CONTEXT)
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULTS.audit_limit, show_default=True,
              help="Entries to show.")
@click.option("--action", help="Only entries of this action (e.g. search, decision, ingest.start).")
@click.pass_context
@_fail_cleanly
def audit(ctx, limit, action):
    """Print the newest audit-log entries (append-only).

    \b
    Example:
      facematch audit --action decision --limit 20
    """
    for e in _open(ctx).audit(action=action, limit=limit):
        click.echo(f"{e['id']:>6} {e['at']} {e['actor']:<12} {e['action']:<24} {json.dumps(e['details'])}")


@cli.command(context_settings=CONTEXT)
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes for the demo ingest.")
@click.option("--data-root", type=click.Path(path_type=Path),
              help="Face data folder [default: $FACEMATCH_TEST_DATA or ../shared/data].")
@click.pass_context
@_fail_cleanly
def demo(ctx, workers, data_root):
    """Ingest a real custody-style gallery and search it with real probe images.

    Uses ../shared/data/frmdb-dev (plus LFW distractors) when present, else faces that ship with
    scikit-image, and says which.

    \b
    Example:
      facematch --data-dir /tmp/fm-demo demo
    """
    from facematch.cli.demo import run_demo

    run_demo(ctx.obj["settings"], workers=workers, data_root=data_root, echo=click.echo)


def _register_evaluation_commands():
    from facematch.cli.evaluation_commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register_evaluation_commands()


def main():
    cli(prog_name="facematch")


if __name__ == "__main__":
    main()
