"""Every analysis command has the same shared options (issue 27), built from the registry so a
new command is covered with no edit here; ``--quick`` runs a command at the report's sizes."""

from __future__ import annotations

import dataclasses

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from interp.cli import app
from interp.experiments import registry
from interp.experiments.options import COMMON, takes_quick


def _commands() -> dict[tuple[str, ...], object]:
    """Every leaf command of the CLI by its words, e.g. ("score", "sinks")."""
    out: dict[tuple[str, ...], object] = {}

    def walk(group, words):
        for name, sub in group.commands.items():
            if hasattr(sub, "commands"):
                walk(sub, (*words, name))
            else:
                out[(*words, name)] = sub

    walk(get_command(app), ())
    return out


def _words(exp) -> tuple[str, ...]:
    group, name = exp.command
    return (name,) if group == "app" else (group, name)


def _options(command) -> set[str]:
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def test_every_registry_command_has_the_shared_options():
    commands = _commands()
    exps = list(registry().values())
    assert len(exps) >= 14  # every analysis, calibrations and patching tasks included
    for exp in exps:
        options = _options(commands[_words(exp)])
        missing = set(COMMON) - options
        assert not missing, f"interp {' '.join(_words(exp))} lacks {sorted(missing)}"
        assert ("--quick" in options) == takes_quick(exp.command), _words(exp)
        switch = next(p for p in commands[_words(exp)].params if "--progress" in p.opts)
        assert "--no-progress" in switch.secondary_opts  # one switch with two spellings everywhere


# The commands outside the registry (plain typer commands): each shared option they lack, and why.
# Stated here so a command can lack one only on purpose; every other shared option they must have.
EXEMPT: dict[tuple[str, ...], dict[str, str]] = {
    ("info",): {
        "--out": "prints its check to the terminal and writes no file",
        "--fresh": "writes nothing, so there is no finished work to ignore",
        "--progress": "one forward pass of one prompt: no loop to show",
        "--image": "draws no figure",
    },
    ("report",): {
        "--fresh": "every run recomputes every stage (nothing resumes, so nothing to ignore)",
        "--progress": "its stages run without bars; it prints one line per stage instead",
    },
    ("patch", "overlap"): {
        "--model": "reads two patching runs' folders and loads no model",
        "--fresh": "one comparison of two stored tables: nothing resumes",
        "--progress": "no loop to show",
    },
}


def test_other_commands_have_the_shared_options_or_say_why_not():
    commands = _commands()
    registered = {_words(exp) for exp in registry().values()}
    others = {words: cmd for words, cmd in commands.items() if words not in registered}
    assert set(others) == set(EXEMPT), "a command outside the registry: list what it lacks (and why) in EXEMPT"
    for words, command in others.items():
        options = _options(command)
        lacks = set(COMMON) - options
        assert lacks == set(EXEMPT[words]), (
            f"interp {' '.join(words)} lacks {sorted(lacks)}, EXEMPT says {sorted(EXEMPT[words])}"
        )


def test_patch_overlap_image_needs_out_and_refuses_a_bad_format(tmp_path, monkeypatch, capsys):
    """Both refused in one line, exit 2, before either run folder is read (the folders here do not exist)."""
    import sys

    from interp.cli import main

    def cli(*argv) -> int:
        monkeypatch.setattr(sys, "argv", ["interp", *argv])
        with pytest.raises(SystemExit) as exit_:
            main()
        return int(exit_.value.code or 0)

    missing = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert cli("patch", "overlap", *missing, "--image", "png") == 2
    assert capsys.readouterr().err.strip().endswith("give --out DIR too")
    assert cli("patch", "overlap", *missing, "--image", "gif", "--out", str(tmp_path / "o")) == 2
    assert "use formats from png, svg, pdf" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_quick_commands_declare_the_report_sizes():
    """Each --quick command has sizes, and they are the report's quick config where it has one."""
    for exp in registry().values():
        if not takes_quick(exp.command):
            continue
        fields = {f.name for f in dataclasses.fields(exp.config)}
        assert exp.quick and set(exp.quick) <= fields, exp.name
        if exp.report is not None and not (exp.report.needs or exp.report.uses):
            report = exp.report.config(True, {})
            assert {k: getattr(report, k) for k in exp.quick} == dict(exp.quick), exp.name


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "argv,want",
    [
        (["score", "heads", "--quick"], {"n_seqs": 2, "length": 24}),
        (["score", "heads", "--quick", "--length", "40"], {"n_seqs": 2, "length": 40}),  # a given flag wins
        (["score", "heads"], {"n_seqs": 8, "length": 64}),
        (["patch", "colored-objects", "--quick"], {"task": "colored-objects", "n": 4, "method": "attribution"}),
    ],
)
def test_quick_sets_the_report_sizes_and_a_given_flag_wins(argv, want, monkeypatch, tmp_path):
    """The config a command runs is caught where the store binds it to the model (no model loads)."""
    import interp.distributed
    from interp.experiments import _base

    seen = []

    def bind(self, lm, config=None):
        seen.append(config)
        raise _Stop

    monkeypatch.setattr(interp.distributed, "rank_model", lambda *args, **kwargs: object())
    monkeypatch.setattr(_base.Store, "bind", bind)
    result = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, _Stop), result.output
    assert {k: getattr(seen[0], k) for k in want} == want
