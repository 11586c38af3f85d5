"""What every facematch command shares: Click context settings and the named-error adapter."""

from __future__ import annotations

import functools
import sys

import click

from facematch.errors import FacematchError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail_cleanly(command):
    """Turn facematch's named errors into ``error: <message>`` and exit status 1."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FacematchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    return wrapper
