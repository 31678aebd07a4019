"""The ``trialwatch`` command: global options, lazily loaded subcommands, one-line errors.

Subcommands live in sibling modules and are imported only when invoked, so ``--help``
stays fast. Register a new command in ``COMMANDS`` as ``"name": "module:attribute"``.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from trialwatch.monitor import __version__
from trialwatch.monitor.cli.help import HelpGroup
from trialwatch.monitor.errors import CommandError, database_busy, with_help_pointer
from trialwatch.monitor.redaction import terminal_line
from trialwatch.monitor.service.context import App

COMMANDS: dict[str, str] = {
    "demo": "trialwatch.monitor.cli.demo:demo",
    "watch": "trialwatch.monitor.cli.watching:watch",
    "unwatch": "trialwatch.monitor.cli.watching:unwatch",
    "list": "trialwatch.monitor.cli.trials:list_trials",
    "ingest": "trialwatch.monitor.cli.records:ingest",
    "check": "trialwatch.monitor.cli.watching:check",
    "run": "trialwatch.monitor.cli.service:run",
    "diff": "trialwatch.monitor.cli.records:diff",
    "history": "trialwatch.monitor.cli.records:history",
    "show": "trialwatch.monitor.cli.show:show",
    "notify": "trialwatch.monitor.cli.alerts:notify",
    "outbox": "trialwatch.monitor.cli.alerts:outbox",
    "status": "trialwatch.monitor.cli.service:status",
    "db": "trialwatch.monitor.cli.db:db",
    "backfill": "trialwatch.monitor.cli.backfill:backfill",
    "serve": "trialwatch.monitor.cli.web:serve",
    "feed": "trialwatch.monitor.cli.web:feed",
    "export": "trialwatch.monitor.cli.export:export",
}


#: Read-only commands that log nothing of their own: logging (structlog, and the asyncio it
#: imports) is set up only if they load a configuration file, so they answer at once.
QUICK_COMMANDS = frozenset({"list", "status", "history", "diff", "export"})


class LazyGroup(HelpGroup):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, target in COMMANDS.items() if _module_exists(target)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _module_exists(target):
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; SQLite's "database is locked" becomes one line, not a bug."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            busy = database_busy(exc)
            if busy is None:
                raise
            raise busy from None


def _module_exists(target: str) -> bool:
    module_name = target.split(":")[0]
    relative = Path(*module_name.removeprefix("trialwatch.monitor.").split("."))
    return (Path(__file__).resolve().parents[1] / relative).with_suffix(".py").exists()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trialwatch")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML configuration (default: ./trialwatch.toml if present).")
@click.option("--db", "db_url", metavar="URL",
              help="Database URL (env TRIALWATCH_DB; default: SQLite in the user data dir).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default=None,
              help="Log renderer on stderr (default: console on a TTY, JSON otherwise).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, db_url: str | None,
        log_format: str | None) -> None:
    """Watch ClinicalTrials.gov records, keep every version, and alert on what changed."""
    level = os.environ.get("TRIALWATCH_LOG_LEVEL", "warning" if log_format is None else "info")
    app = App(config_path=config_path, db_url=db_url, log_format=log_format,
              log_settings=(log_format or os.environ.get("TRIALWATCH_LOG_FORMAT", "auto"),
                            level))
    if ctx.invoked_subcommand not in QUICK_COMMANDS:
        app.ensure_logging()
    ctx.obj = app
    ctx.call_on_close(app.close)


def usage_problem(exc: click.UsageError) -> str:
    """A usage error as one line that ends by saying where the help is."""
    command = exc.ctx.command_path if exc.ctx is not None else "trialwatch"
    return with_help_pointer(exc.format_message(), command)


#: Collect young objects every 50,000 allocations rather than CPython's 700 (set before a
#: command loads SQLAlchemy, which every command imports lazily): loading it and reading
#: 10,000 rows make hundreds of thousands of objects and almost no cycles, and the default
#: thresholds spent a fifth of ``trialwatch list``'s time re-scanning them
#: (bench/oneshot.py). Cycles are still collected.
GC_THRESHOLDS = (50_000, 20, 20)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: errors become one line on stderr, never a traceback.

    It ends the process (``sys.exit``), and on its way out freezes the garbage collector's
    objects: the interpreter's shutdown would otherwise walk every object SQLAlchemy and the
    command made, looking for cycles whose memory the exit returns anyway (60 ms of a
    ``list`` of 10,000 trials, bench/oneshot.py). Files, connections and log handlers are
    closed by the command and by ``atexit`` as before."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        _run(argv)
    finally:
        gc.freeze()


def _run(argv: list[str] | None) -> None:
    try:
        code = cli.main(args=argv, prog_name="trialwatch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("trialwatch: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare ``trialwatch``, ``trialwatch db``
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except CommandError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        click.echo(f"trialwatch: error: {usage_problem(exc)}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(terminal_line(f"trialwatch: error: {' '.join(exc.format_message().split())}"),
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("trialwatch: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, traceback on request
        if os.environ.get("TRIALWATCH_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        click.echo(terminal_line(f"trialwatch: internal error: {type(exc).__name__}: {message} "
                                 "(set TRIALWATCH_DEBUG=1 for a traceback)"), err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
