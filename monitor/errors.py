"""The error every command reports as one line: what input, what problem, which exit code."""

from __future__ import annotations

import click

EXIT_ERROR = 2  # like diff(1): 0 equal / ok, 1 different / partial failure, 2 trouble


class CommandError(click.ClickException):
    """A user-facing failure: printed as ``trialwatch: error: <message>``, no traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(" ".join(message.split()))  # one line, always
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it ClassVar

    def show(self, file: object = None) -> None:
        click.echo(f"trialwatch: error: {self.format_message()}", err=True)
