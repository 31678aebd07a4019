"""The error every command reports as one line: what input, what problem, which exit code."""

from __future__ import annotations

import click

from trialwatch.monitor.redaction import terminal_line

EXIT_ERROR = 2  # like diff(1): 0 equal / ok, 1 different / partial failure, 2 trouble


class CommandError(click.ClickException):
    """A user-facing failure: printed as ``trialwatch: error: <message>``, no traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(" ".join(message.split()))  # one line, always
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it ClassVar

    def show(self, file: object = None) -> None:
        click.echo(terminal_line(f"trialwatch: error: {self.format_message()}"), err=True)


def database_busy(exc: BaseException, database: str | None = None) -> CommandError | None:
    """SQLite's "database is locked" (another process kept its write lock past the busy
    timeout) as the one-line error a user can act on; None for any other exception."""
    if type(exc).__name__ != "OperationalError" or not any(
            text in str(exc) for text in ("database is locked", "database is busy")):
        return None
    from trialwatch.storage.engine import SQLITE_BUSY_TIMEOUT_MS

    where = f"database {database}: " if database else ""
    return CommandError(
        f"{where}database is busy: another process held its write lock for more than "
        f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g}s (a long `trialwatch` command?); try again")


def with_help_pointer(message: str, command_path: str) -> str:
    """``message`` as one sentence followed by ``Try 'trialwatch CMD --help'``."""
    text = " ".join(message.split())
    if text and text[-1] not in ".!?":
        text += "."
    return f"{text} Try '{command_path} --help'"


class UsageProblem(CommandError):
    """A command used wrongly (options that do not go together, nothing to act on): one line
    that ends by naming the help to read, exit status 2."""

    def __init__(self, message: str) -> None:
        ctx = click.get_current_context(silent=True)
        super().__init__(with_help_pointer(message, ctx.command_path if ctx else "trialwatch"))
