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
from facematch.cli.support import CONTEXT, DEFAULTS, POSITIVE, parse_box
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
        click.option("--workers", type=POSITIVE, help="Worker processes [default: CPU cores]."),
        click.option("--batch-size", type=POSITIVE, help="Images per catalogue transaction."),
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
@click.option("--collection", help="Agency collection the new images join (see `facematch agencies add`); "
              "without it the service shows them to nobody.")
@_ingest_options
@click.option("--allow-relabel", is_flag=True,
              help="Move an image stored under another subject id to SOURCE's (else it is refused).")
@click.pass_context
@_fail_cleanly
def ingest_custody(ctx, source, collection, workers, batch_size, user, as_json, allow_relabel):
    """Enrol custody images from SOURCE: a <subject_id>/<image> folder or a CSV manifest
    (path,subject_id[,custody_ref,captured_at,source,not_convicted]). The same image under two subject
    ids is refused; rows with invalid fields are recorded and skipped.

    \b
    Example:
      facematch ingest custody ../shared/data/frmdb-dev/mugshots
    """
    fm = _open(ctx)
    summary = _progress_and_run(lambda p: fm.ingest_custody(
        source, workers=workers, batch_size=batch_size, user=user, progress=p, collection=collection,
        allow_relabel=allow_relabel), as_json)
    _print_summary(summary, as_json)


@ingest.command("scene", context_settings=CONTEXT)
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--case", help="Case reference for every image of a folder (manifests may carry case_ref).")
@click.option("--agency", help="Agency whose cases the images join (created when new; see `facematch agencies "
              "add`); without it the service shows them to nobody.")
@_ingest_options
@click.pass_context
@_fail_cleanly
def ingest_scene(ctx, source, case, agency, workers, batch_size, user, as_json):
    """Store every face of crime-scene images from SOURCE (a folder tree, or a CSV manifest
    path,case_ref[,captured_at,source]) as unidentified faces.

    \b
    Example:
      facematch ingest scene ./stills --case OP-HARBOUR --agency north
    """
    fm = _open(ctx)
    summary = _progress_and_run(lambda p: fm.ingest_scene(
        source, case=case, workers=workers, batch_size=batch_size, user=user, progress=p, agency=agency), as_json)
    _print_summary(summary, as_json)


@cli.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--case", help="Case reference the search is made for (recorded).")
@click.option("--top", type=POSITIVE, help=f"Candidates per list [default: {DEFAULTS.top}].")
@click.option("--box", callback=parse_box, help="Search only the face in this box: x,y,w,h in pixels (every image).")
@click.option("--boxes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with header path,box (box \"x,y,w,h\"): a box per image; unlisted images are searched whole.")
@click.option("--one-person", is_flag=True,
              help="IMAGES are stills (or clips) of ONE unknown person: also give one fused candidate list. "
              "A video (mp4, avi, mkv...) is always searched this way.")
@click.option("--user", help="Who runs the search [default: OS user].")
@click.option("--reason", required=True, help="Why the search is made (required; recorded in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (docs/search-json.md).")
@click.option("--workers", type=POSITIVE, help="Processes analysing the images, same results as one [default: "
              "env FACEMATCH_SEARCH_WORKERS, else one per image, at most the CPU cores; 1: no worker process].")
@click.pass_context
@_fail_cleanly
def search(ctx, images, case, top, box, boxes, one_person, user, reason, as_json, workers):
    """Search every face in IMAGES against custody subjects and earlier crime-scene faces.

    The search is stored and printed even when no probe face could be searched; then a one-line error
    follows and the exit status is 1.

    \b
    Example:
      facematch search still.jpg --case OP-HARBOUR --reason "suspect at port" --top 10
      facematch search still.jpg --box 410,120,60,60 --reason "suspect at port" --json
      facematch search cam1.jpg cam2.jpg cam3.jpg --one-person --boxes boxes.csv --reason "suspect at port"
      facematch search clip.avi --reason "suspect at port"
    """
    result = _open(ctx).search(list(images), case=case, top=top, box=box, boxes=boxes, one_person=one_person,
                               user=user, reason=reason, workers=workers)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo("\n".join(render.search_lines(result)))
    if not any(p.outcome == "searched" for p in result.probes):
        reasons = "; ".join(sorted({p.reason or p.outcome for p in result.probes}))
        click.echo(render.safe(f"error: no probe face could be searched (search {result.search_id}): {reasons}"),
                   err=True)
        sys.exit(1)


@cli.command(context_settings=CONTEXT)
@click.argument("search_id", type=POSITIVE)
@click.option("--reason", required=True, help="Why you view the search (required; recorded in the audit log).")
@click.option("--user", help="Who views it [default: OS user].")
@click.option("--json", "as_json", is_flag=True, help="Print the stored search as JSON.")
@click.pass_context
@_fail_cleanly
def review(ctx, search_id, reason, user, as_json):
    """Show a stored search, its candidates and the decisions recorded on it (the viewing is audited).

    \b
    Example:
      facematch review 12 --reason "review of leads for OP-HARBOUR"
    """
    result, decisions = _open(ctx).review(search_id, reason=reason, user=user)
    if as_json:
        doc = result.to_dict() | {"decisions": [d.__dict__ for d in decisions]}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo("\n".join(render.search_lines(result, decisions)))


@cli.command(context_settings=CONTEXT)
@click.argument("search_id", type=POSITIVE)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file to write (created readable by you only).")
@click.option("--recipient", required=True, help="Who receives the export (required; recorded).")
@click.option("--reason", required=True, help="Why it is disclosed (required; recorded).")
@click.option("--user", help="Who exports [default: OS user].")
@click.pass_context
@_fail_cleanly
def export(ctx, search_id, output, recipient, reason, user):
    """Export stored search SEARCH_ID with its decisions as JSON for a recipient (a disclosure: audited).

    \b
    Example:
      facematch export 12 --recipient "CPS, J. Doe" --reason "case file OP-HARBOUR" -o search-12.json
    """
    details = _open(ctx).export(search_id, output=output, recipient=recipient, reason=reason, user=user)
    click.echo(f"Exported search {search_id} to {output} for {recipient} (sha256 {details['sha256']}).")


@cli.command(context_settings=CONTEXT)
@click.argument("search_id", type=POSITIVE)
@click.argument("rank", type=POSITIVE)
@click.option("--decision", required=True, type=click.Choice(DECISIONS))
@click.option("--reviewer", required=True, help="Reviewer's id (recorded).")
@click.option("--note", help="Free-text note (recorded).")
@click.option("--probe", type=POSITIVE,
              help="Probe face row shown by review (when several; a person-level search: omit it for the fused list).")
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
    click.echo(render.safe(f"Recorded decision {d.decision_id}: search {d.search_id} probe {d.probe_no} {d.list} "
                           f"rank {d.rank} ({d.candidate}) {d.decision} by {d.reviewer}"))


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
        click.echo(render.safe(f"{kind}: {text}"))


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


def _delete_options(command):
    for option in reversed([
        click.option("--reason", required=True, help="Why (recorded in the audit log and on past searches)."),
        click.option("--user", help="Who deletes [default: OS user]."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                     help=f"Evaluation cache to purge too [default: ./{DEFAULTS.evaluation.cache_dir}]."),
    ]):
        command = option(command)
    return command


@delete.command("subject", context_settings=CONTEXT)
@click.argument("subject")
@_delete_options
@click.option("--agency", help="Whose subject: a reference belongs to its agency, and two agencies' subjects of "
                               "the same reference are two people ('' for the subject ingested without agency) "
                               "[default: the one subject of that reference; refused when several agencies use it].")
@click.pass_context
@_fail_cleanly
def delete_subject(ctx, subject, reason, user, cache_dir, agency):
    """Delete SUBJECT's custody images (those without a face too), faces, index and evaluation-cache
    entries; past searches show the candidate as deleted. Only one agency's subject is ever deleted.

    \b
    Example:
      facematch delete subject 040 --reason "no further action: retention ended"
      facematch delete subject P-123 --agency north --reason "retention ended"
    """
    n = _open(ctx).delete_subject(subject, user=user, reason=reason, cache_dir=cache_dir, agency=agency)
    click.echo(render.safe(f"Deleted subject {subject}: {n} faces removed from catalogue and index."))


_AGENCY_COPY = click.option("--agency", help="Only this agency's copy (each agency keeps its own record of "
                                            "a file, and its own cases) [default: every agency's].")


@delete.command("case", context_settings=CONTEXT)
@click.argument("case")
@_delete_options
@_AGENCY_COPY
@click.pass_context
@_fail_cleanly
def delete_case(ctx, case, reason, user, cache_dir, agency):
    """Delete CASE completely: its crime-scene images with their faces, index and evaluation-cache entries,
    the searches made in it (probes, candidate lists, decisions, reviews; uploaded probe files no other
    search uses) and the case itself. Other searches' candidates showing its faces stay, marked deleted.

    \b
    Example:
      facematch delete case OP-HARBOUR --reason "case closed"
    """
    n = _open(ctx).delete_case(case, user=user, reason=reason, cache_dir=cache_dir, agency=agency)
    click.echo(render.safe(f"Deleted case {case}: {n} faces removed from catalogue and index."))


@delete.command("image", context_settings=CONTEXT)
@click.argument("image")
@_delete_options
@_AGENCY_COPY
@click.pass_context
@_fail_cleanly
def delete_image(ctx, image, reason, user, cache_dir, agency):
    """Delete one stored image, named by its SHA-256 or its path, with its faces, index and cache entries.

    \b
    Example:
      facematch delete image ./custody/040/Img_23.jpg --reason "wrong person enrolled"
    """
    n = _open(ctx).delete_image(image, user=user, reason=reason, cache_dir=cache_dir, agency=agency)
    click.echo(f"Deleted the image: {n} faces removed from catalogue and index.")


@cli.group(context_settings=CONTEXT, invoke_without_command=True)
@click.option("--limit", type=POSITIVE, default=DEFAULTS.audit_limit, show_default=True,
              help="Entries to show.")
@click.option("--action", help="Only entries of this action (e.g. search, decision, ingest.start).")
@click.option("--reason", help="Why you read the audit log (required to list it; recorded).")
@click.option("--user", help="Who reads it [default: OS user].")
@click.pass_context
@_fail_cleanly
def audit(ctx, limit, action, reason, user):
    """Print the newest audit-log entries (the reading is itself audited), or check the log's chain.

    \b
    Example:
      facematch audit --action decision --limit 20 --reason "monthly supervision check"
      facematch audit head > audit-head.txt
      facematch audit verify --head audit-head.txt
    """
    if ctx.invoked_subcommand is not None:
        return
    if not reason:
        raise click.UsageError("Missing option '--reason' (why you read the audit log).")
    for e in _open(ctx).audit(action=action, limit=limit, reason=reason, user=user):
        click.echo(render.audit_line(e))


@audit.command("head", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def audit_head(ctx):
    """Print the newest entry's id and MAC; keep it outside the catalogue to detect truncation later.

    \b
    Example:
      facematch audit head > /secure/elsewhere/audit-head.txt
    """
    click.echo(_open(ctx).audit_head())


@audit.command("verify", context_settings=CONTEXT)
@click.option("--head", help="A head printed earlier by `facematch audit head` (ID:MAC or a file holding it).")
@click.pass_context
@_fail_cleanly
def audit_verify(ctx, head):
    """Check the audit chain and the stored searches and decisions against it; exit 1 on any finding.

    \b
    Example:
      facematch audit verify --head audit-head.txt
    """
    report = _open(ctx).verify_audit(head=head)
    for line in report.notes:
        click.echo(f"note: {line}", err=True)
    if not report.ok:
        for line in report.findings:
            click.echo(f"FAIL {line}")
        click.echo(f"error: audit verification failed: {len(report.findings)} finding(s)", err=True)
        sys.exit(1)
    legacy = f"; {report.legacy_entries} earlier entries sealed at its start" if report.legacy_entries else ""
    click.echo(f"ok: {report.entries} entries verified, chain started {report.started_at}{legacy}; head {report.head}")


@cli.command(context_settings=CONTEXT)
@click.option("--workers", type=POSITIVE, help="Worker processes for the demo ingest.")
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
    from facematch.cli import account_commands, data_commands, evaluation_commands

    for command in evaluation_commands.COMMANDS + data_commands.COMMANDS + account_commands.COMMANDS:
        cli.add_command(command)


_register_evaluation_commands()


def main():
    cli(prog_name="facematch")


if __name__ == "__main__":
    main()
