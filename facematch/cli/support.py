"""What every facematch command shares: Click context settings, the defaults shown in help, the box
parser and the named-error adapter."""

from __future__ import annotations

import functools
import sys

import click

from facematch.cli import render
from facematch.errors import FacematchError, InvalidArgument
from facematch.search.person import parse_xywh
from facematch.settings import MAX_INT, Settings

__all__ = ["CONTEXT", "DEFAULTS", "POSITIVE", "fail_cleanly", "parse_box"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: Integer arguments: ids, ranks, counts (1..2**63-1, so an oversized value is a usage error, not a crash).
POSITIVE = click.IntRange(min=1, max=MAX_INT)

#: The settings' defaults (environment not applied), for option defaults and help texts.
DEFAULTS = Settings()


def fail_cleanly(command):
    """Turn facematch's named errors into ``error: <message>`` and exit status 1."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FacematchError as exc:
            click.echo(render.safe(f"error: {exc}"), err=True)
            sys.exit(1)
    return wrapper


def parse_box(ctx, param, value):
    """Click callback: "x,y,w,h" (pixels; the one box format users type) -> a tuple of four ints."""
    if value is None:
        return None
    try:
        return parse_xywh(value)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc)) from None
