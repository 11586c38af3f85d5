"""Commands that look after the data itself: proof of deletion, retention review, backup, restore, doctor.

Each is one API call (:class:`facematch.api.Facematch`); every printed value goes through ``render.safe``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facematch.api import Facematch
from facematch.cli import render
from facematch.cli.support import CONTEXT, DEFAULTS
from facematch.cli.support import fail_cleanly as _fail_cleanly

__all__ = ["verify_deletion", "retention", "backup", "restore", "doctor", "COMMANDS"]

_CACHE_DIR = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                          help=f"Evaluation cache [default: ./{DEFAULTS.evaluation.cache_dir}].")


def _open(ctx: click.Context) -> Facematch:
    return Facematch(settings=ctx.obj["settings"])


def _echo(line: str) -> None:
    click.echo(render.safe(line))


@click.command("verify-deletion", context_settings=CONTEXT)
@click.argument("scope", type=click.Choice(["subject", "image", "case"]))
@click.argument("target")
@_CACHE_DIR
@click.option("--agency", help="Only the deletion of this agency's SCOPE TARGET (a reference belongs to its "
              "agency; '' for data ingested without agency). Default: every recorded deletion of TARGET.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
@click.pass_context
@_fail_cleanly
def verify_deletion(ctx, scope, target, cache_dir, agency, as_json):
    """Prove that the recorded deletion of SCOPE TARGET left no trace: catalogue tables, index files and
    sidecars, leftover temporary files, evaluation cache. Exit 1 when a trace remains. The output names
    whose deletions the proof covers.

    \b
    Example:
      facematch verify-deletion subject P-123 --agency north
    """
    report = _open(ctx).verify_deletion(scope, target, cache_dir=cache_dir, agency=agency)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _echo(f"Deletion of {scope} {report['target']} (recorded deletions of: {', '.join(report['agencies'])}): "
              f"{report['faces']} face(s), {report['images']} image(s)")
        for name, problems in report["checks"].items():
            _echo(f"  {name}: " + ("no trace" if not problems else "; ".join(problems)))
    if not report["ok"]:
        click.echo(render.safe(f"error: traces of the deleted {scope} remain (see above)"), err=True)
        sys.exit(1)


@click.group(context_settings=CONTEXT)
def retention():
    """Retention review of custody images: what is due, and deleting it (audited, one entry per subject).

    \b
    Example:
      facematch retention due
    """


@retention.command("due", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def retention_due(ctx):
    """List subjects with custody images past their review date (capture date + the retention period,
    or at once for people not convicted).

    \b
    Example:
      facematch retention due
    """
    due = _open(ctx).retention_due()
    if not due:
        click.echo("Nothing is due.")
    for d in due:
        why = "not convicted" if d.not_convicted else "review period ended"
        _echo(f"{_subject_of(d):<20} {d.due_images}/{d.total_images} image(s) due since {d.review_date} ({why})")


@retention.command("apply", context_settings=CONTEXT)
@click.option("--reason", required=True, help="Why (recorded in the audit log and on past searches).")
@click.option("--user", help="Who deletes [default: OS user].")
@_CACHE_DIR
@click.pass_context
@_fail_cleanly
def retention_apply(ctx, reason, user, cache_dir):
    """Delete every custody image that is due (a subject whose images are all due is deleted whole).

    \b
    Example:
      facematch retention apply --reason "MoPI review: retention period ended"
    """
    done = _open(ctx).retention_apply(reason=reason, user=user, cache_dir=cache_dir)
    for d in done:
        _echo(f"Deleted {d.due_images} image(s) of subject {_subject_of(d)}")
    click.echo(f"{len(done)} subject(s) processed.")


def _subject_of(due) -> str:
    """A subject with its agency (each agency's subject of a reference is another person)."""
    return f"{due.subject} ({due.agency})" if due.agency else due.subject


@click.command(context_settings=CONTEXT)
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
@_fail_cleanly
def backup(ctx, dest):
    """Write a consistent backup of the catalogue (SQLite online backup) and calibration to DEST
    (new or empty). Safe while searches and ingests run. Indexes are rebuilt at restore.

    \b
    Example:
      facematch backup /secure/backups/facematch-2026-11-30
    """
    manifest = _open(ctx).backup(dest)
    _echo(f"Backed up catalogue {manifest['catalogue_id']} to {dest}: {', '.join(manifest['files'])}")


@click.command(context_settings=CONTEXT)
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the catalogue of a data directory that is not empty.")
@click.pass_context
@_fail_cleanly
def restore(ctx, src, force):
    """Restore the backup in SRC into the data directory and rebuild the indexes.

    \b
    Example:
      facematch --data-dir ./facematch-data restore /secure/backups/facematch-2026-11-30
    """
    manifest = _open(ctx).restore(src, force=force)
    _echo(f"Restored catalogue {manifest['catalogue_id']} (backup of {manifest['created_at']}); indexes rebuilt.")


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_context
@_fail_cleanly
def doctor(ctx, as_json):
    """Check the data directory in one report: permissions, catalogue integrity, index consistency,
    leftover temporary files, model and calibration against the pipeline, audit log. Exit 1 when anything
    is wrong.

    \b
    Example:
      facematch doctor
    """
    report = _open(ctx).doctor()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for check in report:
            status = "ok" if check["ok"] else "PROBLEM"
            detail = check.get("note") or "; ".join(check["problems"][:5])
            more = len(check["problems"]) - 5
            _echo(f"{check['check']:<20} {status}" + (f": {detail}" if detail else "")
                  + (f" (and {more} more)" if more > 0 else ""))
    if not all(c["ok"] for c in report):
        click.echo("error: the data directory has problems (see above)", err=True)
        sys.exit(1)


#: Every command of this module, for ``for c in COMMANDS: cli.add_command(c)``.
COMMANDS = [verify_deletion, retention, backup, restore, doctor]
