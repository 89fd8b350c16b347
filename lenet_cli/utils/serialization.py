"""Values on their way to and from files: a config's field types checked, JSON without NaN."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    pass


def check_field_types(cfg: Any, what: str) -> None:
    """Raise ValueError unless each field of a config dataclass has the type of its default.

    Configs are read back from files (weights, checkpoints) that may have been edited: a
    string where a number belongs must be an error here, not a crash deep in training.
    """
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{what} field {f.name!r} has an invalid value {value!r}")


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, through dicts, lists and tuples.

    A run without a validation split records its validation figures as NaN; JSON has no NaN, and
    strict parsers (jq, JavaScript) reject a document that holds Python's bare `NaN`.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
