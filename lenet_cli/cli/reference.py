"""The CLI reference page of the docs, generated from the Typer app: every command's `--help`.

    python -m lenet_cli.cli.reference            # rewrite docs/reference/cli.md
    python -m lenet_cli.cli.reference --check    # exit 1 if the page differs from --help

Each section is the command's own `--help` as an 80-column terminal shows it (no colour), so
the page cannot say anything `--help` does not; tests/cli/test_reference.py fails when they differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

PAGE = Path("docs/reference/cli.md")
WIDTH = 80
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
HEADER = """# CLI reference

Every command's `--help`, as an {width}-column terminal shows it. This page is generated from the
Typer app by `python -m lenet_cli.cli.reference` (do not edit it by hand); a test fails when it and
`--help` differ. The pages under "Commands" explain each command with examples and real output.
"""


def command_names(app: typer.Typer) -> list[str]:
    """The app's commands, in the order `lenet --help` lists them."""
    group = typer.main.get_command(app)
    return list(getattr(group, "commands", {}))


def help_text(app: typer.Typer, args: list[str]) -> str:
    """`lenet ARGS --help` at WIDTH columns, without colour or trailing spaces."""
    result = CliRunner().invoke(app, [*args, "--help"], prog_name="lenet",
                                env={"COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"})
    if result.exit_code != 0:
        raise RuntimeError(f"lenet {' '.join(args)} --help failed: {result.output}")
    lines = [_ANSI.sub("", line).rstrip() for line in result.output.splitlines()]
    return "\n".join(lines).strip("\n")


def sections(app: typer.Typer) -> dict[str, str]:
    """Title -> help text, for `lenet` and every command."""
    out = {"lenet": help_text(app, [])}
    for name in command_names(app):
        out[f"lenet {name}"] = help_text(app, [name])
    return out


def render(app: typer.Typer) -> str:
    """The whole Markdown page."""
    parts = [HEADER.format(width=WIDTH)]
    for title, text in sections(app).items():
        parts.append(f"## `{title}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def differences(app: typer.Typer, page: str) -> list[str]:
    """The sections of `page` that differ from the app's --help (or are missing from it), by title."""
    found = dict(re.findall(r"^## `([^`]+)`\n\n```text\n(.*?)\n```$", page, flags=re.M | re.S))
    want = sections(app)
    diff = [title for title, text in want.items() if found.get(title) != text]
    return diff + [title for title in found if title not in want]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with --check say which sections differ (exit 1)."""
    from lenet_cli.cli.app import app

    args = sys.argv[1:] if argv is None else argv
    path = Path(next((a for a in args if not a.startswith("-")), PAGE))
    if "--check" in args:
        diff = differences(app, path.read_text(encoding="utf-8") if path.is_file() else "")
        if diff:
            print(f"{path} differs from --help in: {', '.join(diff)}. Run `python -m lenet_cli.cli.reference`.")
            return 1
        print(f"{path} matches --help.")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(app), encoding="utf-8")
    print(f"Wrote {path}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
