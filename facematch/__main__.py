"""``python -m facematch`` and the ``facematch`` script: the command line plus ``facematch serve``.

The service sits beside the CLI (neither imports the other), so its command joins the group here.
"""

from facematch.cli.commands import cli
from facematch.service.command import serve

__all__ = ["main"]

cli.add_command(serve)


def main():
    cli(prog_name="facematch")


if __name__ == "__main__":
    main()
