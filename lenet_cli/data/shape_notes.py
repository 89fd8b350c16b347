"""Shape notes: ink that, in the 28x28 the model sees, does not look like a digit.

A speck or a blob is fitted into 20x20 like a digit, and then is a solid disc; a dash
becomes a flat bar. The model still names a digit for them, so these notes say what it
cannot. Only numpy.
"""

from __future__ import annotations

import math

import numpy as np

# What no digit looks like, in the 28x28 the model sees (chosen on the development sets; see
# scripts/predict_validation.py and the README for how many real digits and how much junk each flags):
BLOB_DEPTH = 4  # 3x3 erosions a patch of ink survives: a solid 9x9 block, four times MNIST's stroke
LINE_ASPECT = 0.5  # ink less than half as tall as it is wide: a dash or an underline
# ... or ink spread along one axis (its standard deviation along it over LINE_ELONGATION times that
# across) lying within LINE_TILT degrees of horizontal: a tilted dash, whose box is not flat.
LINE_ELONGATION = 4.0
LINE_TILT = 30.0
NOT_A_DIGIT = "not a digit"  # the start of every shape note, for scripts


def _tilted_line(ink: np.ndarray) -> bool:
    """Whether the ink lies along one straight axis within LINE_TILT degrees of horizontal.

    From the ink's second moments: the principal axis and the spread along and across it. A
    steep line is how many people write a 1, so only near-horizontal ones count. The 2x2
    eigenproblem in closed form: np.linalg.eigh's call cost more than the rest of the notes.
    """
    ys, xs = np.nonzero(ink)
    n = xs.size
    if n < 3:
        return False
    x, y = xs - xs.mean(), ys - ys.mean()
    sxx, syy, sxy = float(x @ x) / (n - 1), float(y @ y) / (n - 1), float(x @ y) / (n - 1)
    mid, half = (sxx + syy) / 2, math.hypot((sxx - syy) / 2, sxy)
    along, across = mid + half, mid - half  # the variances along and across the principal axis
    if along <= 0 or across * LINE_ELONGATION**2 > along:  # the ratio of spreads, squared
        return False
    # The principal axis is at half the angle of (sxx - syy, 2 sxy) from the x axis.
    tilt = abs(math.degrees(0.5 * math.atan2(2 * sxy, sxx - syy)))
    return tilt < LINE_TILT


def _eroded(ink: np.ndarray, depth: int) -> np.ndarray:
    """`depth` 3x3 erosions (outside the image counts as no ink) at once: one by a (2 depth + 1) square,
    as runs along the rows, then along the columns, each built by doubling (runs of 2, 4, 8, then two
    overlapping runs cover 9: an AND of the same pixel twice is that pixel)."""
    size = 2 * depth + 1
    h, w = ink.shape
    padded = np.zeros((h + 2 * depth, w + 2 * depth), dtype=bool)  # False around: np.pad(ink, depth)
    padded[depth : depth + h, depth : depth + w] = ink
    rows = _runs(padded, size)  # (h + 2 depth, w)
    return _runs(rows.T, size).T  # (h, w)


def _runs(a: np.ndarray, size: int) -> np.ndarray:
    """AND over each run of `size` along the rows of `a`: (rows, columns - size + 1)."""
    span, run = 1, a
    while span * 2 <= size:
        run = run[:, :-span] & run[:, span:]
        span *= 2
    return run[:, : run.shape[1] - (size - span)] & run[:, size - span :]


def shape_notes(pixels: np.ndarray) -> list[str]:
    """Notes for ink that does not look like a digit, from the uint8 (28, 28) image the model sees.

    A speck or a blob is fitted into 20x20 like a digit, and then is a solid disc; a dash
    becomes a flat bar. The model still names a digit for them, often with 99% confidence,
    because it has never seen anything but digits: these notes say what it cannot.
    """
    ink = pixels > 127  # (28, 28) bool
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return [f"{NOT_A_DIGIT}: faint ink"]
    notes = []
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if height < LINE_ASPECT * width or _tilted_line(ink):
        notes.append(f"{NOT_A_DIGIT}: a flat line")
    if _eroded(ink, BLOB_DEPTH).any():
        notes.append(f"{NOT_A_DIGIT}: a solid blob")
    return notes
