"""Accounts from the command line, for whoever runs the server (no login): agencies, users, sharing.

This is the system-level administration: it alone creates agencies and an agency's first admin, and it
may act on any agency. In the service an admin administers their own agency only (docs/service.md).

Registered on the main group like the evaluation commands. Each command is one call to
``Facematch.accounts`` (facematch/store/accounts.py); every change is audited with ``--user`` as actor.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from facematch.api import Facematch, default_user
from facematch.cli import render
from facematch.cli.support import CONTEXT
from facematch.cli.support import fail_cleanly as _fail_cleanly
from facematch.store.accounts import ROLES
from facematch.validation import check_text

__all__ = ["agencies", "users", "share", "COMMANDS"]

_ACTOR = click.option("--user", "actor", help="Who makes the change (audited) [default: OS user].")
_REASON = click.option("--reason", help="Why the change is made (audited with it).")


def _reason(reason: str | None) -> str | None:
    return None if reason is None else check_text("reason", reason, "note")


def _accounts(ctx: click.Context):
    return Facematch(settings=ctx.obj["settings"]).accounts


@click.group(context_settings=CONTEXT)
def agencies():
    """Agencies sharing this catalogue (each gets a default custody collection <name>-custody).

    \b
    Example:
      facematch agencies add north-police
    """


@agencies.command("add", context_settings=CONTEXT)
@click.argument("name")
@_ACTOR
@click.pass_context
@_fail_cleanly
def agencies_add(ctx, name, actor):
    """Create agency NAME and its default collection NAME-custody.

    \b
    Example:
      facematch agencies add north-police
    """
    name = check_text("agency name", name, "id")
    _accounts(ctx).add_agency(name, actor=actor or default_user())
    click.echo(render.safe(f"agency {name} created with collection {name}-custody"))


@agencies.command("list", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def agencies_list(ctx):
    """List agencies.

    \b
    Example:
      facematch agencies list
    """
    for agency in _accounts(ctx).agencies():
        click.echo(f"{render.safe(agency['name'])}\t(created {agency['created_at']})")


@click.group(context_settings=CONTEXT)
def users():
    """People who use the service: each belongs to one agency and holds one or more roles.

    \b
    Example:
      facematch users add alice --agency north-police --role investigator --password-file pw.txt
    """


@users.command("add", context_settings=CONTEXT)
@click.argument("username")
@click.option("--agency", required=True, help="The user's agency.")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
              help="A role (repeat for several).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the password from this file's first line [default: prompt].")
@click.option("--token", is_flag=True, help="Also create an API token and print it (shown only once).")
@_ACTOR
@_REASON
@click.pass_context
@_fail_cleanly
def users_add(ctx, username, agency, roles, password_file, token, actor, reason):
    """Create USERNAME in an agency with roles (the password is stored as an argon2 hash).

    \b
    Example:
      facematch users add alice --agency north-police --role investigator --role reviewer
    """
    username = check_text("username", username, "name")
    if password_file:
        lines = password_file.read_text().splitlines()
        password = lines[0] if lines else ""
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    accounts = _accounts(ctx)
    user = accounts.add_user(username, password, agency=agency, roles=list(roles), actor=actor or default_user(),
                             reason=_reason(reason))
    click.echo(render.safe(f"user {user.username} ({user.agency}: {', '.join(sorted(user.roles))}) created"))
    if token:
        token_id, secret = accounts.create_token(user, "created with the user")
        click.echo(render.safe(f"API token {token_id} (shown only now, keep it secret): {secret}"))


@users.command("list", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def users_list(ctx):
    """List users with agency and roles.

    \b
    Example:
      facematch users list
    """
    for user in _accounts(ctx).users():
        click.echo("\t".join(render.safe(v) for v in (user.username, user.agency, ",".join(sorted(user.roles)))))


@click.group(context_settings=CONTEXT)
def share():
    """Sharing agreements: let another agency search a collection (until a date, or until revoked).

    \b
    Example:
      facematch share grant north-police-custody south-police --until 2026-12-31
      facematch share list
      facematch share revoke 3
    """


@share.command("grant", context_settings=CONTEXT)
@click.argument("collection")
@click.argument("agency")
@click.option("--until", help="Last moment of the agreement (ISO date or date-time, UTC) [default: until revoked].")
@_ACTOR
@_REASON
@click.pass_context
@_fail_cleanly
def share_grant(ctx, collection, agency, until, actor, reason):
    """Let AGENCY search COLLECTION (recorded with who granted it and when).

    \b
    Example:
      facematch share grant north-police-custody south-police --until 2026-12-31
    """
    share_id = _accounts(ctx).share(collection, agency, actor=actor or default_user(), until=until,
                                    reason=_reason(reason))
    click.echo(render.safe(f"sharing agreement {share_id}: {agency} may search {collection}"
                           + (f" until {until}" if until else "")))


@share.command("revoke", context_settings=CONTEXT)
@click.argument("share_id", type=int)
@_ACTOR
@_REASON
@click.pass_context
@_fail_cleanly
def share_revoke(ctx, share_id, actor, reason):
    """End sharing agreement SHARE_ID now (kept, marked revoked).

    \b
    Example:
      facematch share revoke 3
    """
    _accounts(ctx).revoke_share(share_id, actor=actor or default_user(), reason=_reason(reason))
    click.echo(render.safe(f"sharing agreement {share_id} revoked"))


@share.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@_fail_cleanly
def share_list(ctx, as_json):
    """Every sharing agreement, valid or not.

    \b
    Example:
      facematch share list
    """
    rows = _accounts(ctx).shares()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "valid" if r["valid"] else ("revoked" if r["revoked_at"] else "expired")
        fields = (r["id"], f"{r['collection']} ({r['owner']}) -> {r['agency']}", state,
                  f"granted by {r['granted_by']} at {r['granted_at']}", f"until {r['valid_until'] or 'revoked'}")
        click.echo("\t".join(render.safe(v) for v in fields))


#: Every command of this module, for ``cli.add_command``.
COMMANDS = [agencies, users, share]
