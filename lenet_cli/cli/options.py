"""Options shared by several commands, declared once (help texts included)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lenet_cli.devices import DEVICE_HELP, DeviceSpec, parse_device

# Input paths are checked by the core, not by Typer (readable=False): an unreadable file is a
# failure to fix (exit 1, with what to do), like a missing one, not a usage error.
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help=DEVICE_HELP)]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder with the MNIST files.",
                 show_default="$LENET_DATA_DIR or ~/.cache/lenet", readable=False),
]
NoDownloadOpt = Annotated[bool, typer.Option("--no-download", help="Never download MNIST; fail if it is missing.")]
WeightsOpt = Annotated[
    Optional[Path],
    typer.Option("--weights", "-w", help="A .safetensors file from `lenet train` (or .onnx where supported).",
                 show_default="the bundled model", readable=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]
ExistOkOpt = Annotated[bool, typer.Option("--exist-ok", help="Replace the --output file if it exists already "
                                          "(without it, an existing file is refused).")]
TtaOpt = Annotated[bool, typer.Option("--tta", help="Test-time augmentation: average the probabilities over each "
                                      "image and its 8 one-pixel shifts (9 passes per image).")]


def device_spec(text: str) -> DeviceSpec:
    """Parse --device once, before anything slow: a typo is a usage error (exit 2)."""
    return parse_device(text)


def examples(*lines: str) -> str:
    """The 'Examples' block of a command's --help: one command per line, with an optional # comment."""
    rendered = []
    for line in lines:
        command, _, comment = line.partition("  # ")
        rendered.append(f"  {command}" + (f"   [dim]# {comment}[/]" if comment else ""))
    return "[bold]Examples[/]\n\n" + "\n\n".join(rendered)
