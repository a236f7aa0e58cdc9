"""`interp --help` shows every help string as written, and `interp --version` the installed version.

Typer renders help through rich; in rich's markup mode ``pip install 'interp[ray]'`` printed as
``pip install 'interp'`` (``[ray]`` read as a style tag); in Markdown mode ``head_L<layer>H<head>.html``
lost ``<layer>`` as an HTML tag. Help is printed as written (``rich_markup_mode=None``). Each
command's ``--help`` is rendered here and every token of its help strings that markup could eat
(brackets, angle brackets, asterisks, underscores) must appear in the output.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest
import typer
from typer.testing import CliRunner

from interp.cli import app

RUNNER = CliRunner()
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400", "NO_COLOR": "1"}  # no wrapping inside a token


def commands() -> list[tuple[tuple[str, ...], object]]:
    """(argument path, command) of the app and of every group and command under it."""
    out = []

    def walk(path: tuple[str, ...], cmd) -> None:
        out.append((path, cmd))
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click: no isinstance)
            for name, sub in sorted(cmd.commands.items()):
                walk((*path, name), sub)

    walk((), typer.main.get_command(app))
    return out


def fragile_tokens(text: str) -> list[str]:
    """Tokens of a help string that rich or Markdown markup could eat or restyle."""
    tokens = []
    for token in text.split():
        token = token.strip(".,;:()")
        if re.search(r"[\[\]<>*_]", token):
            tokens.append(token)
    return tokens


def rendered(path: tuple[str, ...]) -> str:
    result = RUNNER.invoke(app, [*path, "--help"], env=WIDE, terminal_width=400)
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


COMMANDS = commands()


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "interp" for p, _ in COMMANDS])
def test_help_shows_every_help_string_intact(path: tuple[str, ...], command) -> None:
    out = rendered(path)
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    missing = [t for text in texts for t in fragile_tokens(text) if t not in out]
    assert missing == [], f"interp {' '.join(path)} --help lost {missing}"
    assert "pip install 'interp'" not in out  # every pip install in the help names its extra


def test_the_ray_extra_survives_in_the_top_level_help() -> None:
    """The case the issue reported: the launch options' --engine help names the [ray] extra."""
    assert "pip install 'interp[ray]'" in rendered(())


def test_fragile_tokens_finds_the_extra() -> None:
    assert fragile_tokens("Ray actors (pip install 'interp[ray]').") == ["'interp[ray]'"]


def test_version_is_the_installed_one() -> None:
    result = RUNNER.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"interp {importlib.metadata.version('interp')}"
