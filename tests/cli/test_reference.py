"""docs/reference/cli.md is every command's --help: the page cannot drift from the app."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from lenet_cli.cli import reference
from lenet_cli.cli.app import app

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"


def test_the_cli_reference_matches_help():
    diff = reference.differences(app, PAGE.read_text(encoding="utf-8"))
    assert not diff, f"{PAGE} differs from --help in {diff}: run `python -m lenet_cli.cli.reference`."


COMMANDS = ["train", "eval", "predict", "export", "serve", "checks", "bench"]


def test_the_reference_lists_every_command():
    page = PAGE.read_text(encoding="utf-8")
    assert sorted(typer.main.get_command(app).commands) == sorted(COMMANDS)
    for name in typer.main.get_command(app).commands:
        assert f"## `lenet {name}`" in page


@pytest.mark.parametrize("name", COMMANDS)
def test_the_reference_shows_every_option_in_full(name):
    """Every long option name appears whole: Rich shortens what does not fit (`--opt…`)."""
    page = PAGE.read_text(encoding="utf-8")
    section = page.split(f"## `lenet {name}`", 1)[1].split("\n## ", 1)[0]
    command = typer.main.get_command(app).commands[name]
    missing = [opt for param in command.params for opt in param.opts + param.secondary_opts
               if opt.startswith("--") and opt not in section]
    assert not missing, f"lenet {name} --help at 80 columns does not show {missing} whole"


@pytest.mark.slow
def test_the_drift_test_fails_when_a_help_text_changes(monkeypatch):
    """Change one option's help in the app: the committed page no longer matches, and the check says where."""
    page = PAGE.read_text(encoding="utf-8")
    assert reference.differences(app, page) == []
    real = reference.help_text

    def edited(app_, args):
        text = real(app_, args)
        return text.replace("Images per step.", "Pictures per step.") if args == ["train"] else text

    monkeypatch.setattr(reference, "help_text", edited)
    assert reference.differences(app, page) == ["lenet train"]
    assert reference.main(["--check", str(PAGE)]) == 1
    monkeypatch.undo()
    assert reference.main(["--check", str(PAGE)]) == 0


def test_a_missing_section_is_a_difference():
    page = PAGE.read_text(encoding="utf-8")
    start = page.index("## `lenet eval`")
    cut = page[:start] + page[page.index("## `lenet predict`"):]
    assert reference.differences(app, cut) == ["lenet eval"]
