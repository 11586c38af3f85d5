"""``facematch serve``: the HTTP API and reviewer pages on 127.0.0.1 (put a TLS reverse proxy in front)."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from facematch.settings import ServiceSettings

__all__ = ["serve"]

_D = ServiceSettings()
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(context_settings=_CONTEXT)
@click.option("--host", default=_D.host, show_default=True, help="Address to listen on (keep loopback; proxy in front).")
@click.option("--port", default=_D.port, show_default=True, type=int)
@click.option("--workers", default=_D.workers, show_default=True, type=click.IntRange(min=1),
              help="Processes analysing probe images (models loaded once each).")
@click.option("--ingest-root", "ingest_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A server folder operators may ingest from (repeat).")
@click.pass_context
def serve(ctx, host, port, workers, ingest_roots):
    """Serve the HTTP API (/api, OpenAPI at /docs) and the reviewer web page.

    Users, agencies and sharing come from `facematch users add`, `agencies add`, `share grant`.

    \b
    Example:
      facematch --data-dir facematch-data/demo serve --port 8000 --ingest-root /srv/custody
    """
    import uvicorn

    from facematch.service import worker
    from facematch.service.app import create_app

    settings = ctx.obj["settings"]
    service = ServiceSettings(host=host, port=port, workers=workers, ingest_roots=tuple(ingest_roots))
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot use data directory {settings.data_dir}: {exc}") from None
    # SIGTERM (systemd's stop) must end in the ``finally`` below: uvicorn shuts down gracefully on it, restores
    # the previous handler and raises the signal again; with the default handler that killed this process
    # on the spot and left the worker processes running, orphaned, with their models loaded.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    pool = worker.make_pool(settings, workers)
    try:
        for done in [pool.submit(worker.warm_up) for _ in range(workers)]:
            done.result()
        app = create_app(settings, service, pool=pool)
        click.echo(f"facematch service on http://{host}:{port}/ (API docs /docs); Ctrl-C stops it", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    finally:
        pool.shutdown(cancel_futures=True)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)
