"""The command line: a thin adapter over :class:`facematch.api.Facematch` (presentation lives here)."""

from facematch.cli.commands import cli, main

__all__ = ["cli", "main"]
