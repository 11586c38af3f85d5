#!/usr/bin/env python3
"""Batch-ingest scene images: the same as `facematch ingest scene` (see `--help`).

Usage: scripts/ingest_scene.py SOURCE [--workers N] [--batch-size N] [--user ID] [--json] --case REF
Global options (data and index folders) come from FACEMATCH_DATA_DIR / FACEMATCH_INDEX_DIR.
A bad file never stops the batch; a bad source exits 1 with a one-line error.
"""

import sys

from facematch.cli.commands import cli

if __name__ == "__main__":
    cli(["ingest", "scene", *sys.argv[1:]], prog_name="ingest_scene.py")
