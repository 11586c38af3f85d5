"""``python -m facematch`` runs the command line."""

from .cli import main

main()
