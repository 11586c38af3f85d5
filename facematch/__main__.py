"""``python -m facematch`` runs the command line."""

from facematch.cli.commands import main

main()
