"""How the command line explains itself: command lists with whole-sentence summaries.

click cuts each command's summary to fit one line ("Add trials, or a saved search whose
matches become watched..."); ``HelpGroup`` lists the whole first sentence of the command's
help instead, wrapped like any other help text, so a summary never ends in "...".
"""

from __future__ import annotations

import re

import click


def first_sentence(text: str | None) -> str:
    """The first sentence of the first paragraph of ``text``, whitespace collapsed."""
    if not text:
        return ""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(?:\s|$)", paragraph)
    return match.group(1) if match else paragraph


class HelpGroup(click.Group):
    """A click group whose command list shows whole sentences, never a cut summary."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.short_help or first_sentence(command.help)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
