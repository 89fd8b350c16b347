"""Order statistics of float arrays: numpy's median and linear quantile, exactly, in less time.

Split from lighting.py, their main user. np.median and np.quantile copy a float32 array to
float64 and partition all of it; these select in float32 (the same elements), narrow a large
array down first, and do numpy's float64 arithmetic on the one or two elements found.
"""

from __future__ import annotations

import math

import numpy as np

BRACKET_FROM = 8192  # elements from which a selection first narrows the array down (_select)
SAMPLE_SIZE = 1024  # every (n // SAMPLE_SIZE)-th element estimates where the wanted ranks lie
SAMPLE_MARGIN = 48  # sample ranks either side of the estimate: the bracket misses about once in 10^6


def _select(flat: np.ndarray, ranks: list[int]) -> list[float]:
    """The elements at `ranks` (sorted, distinct) of `flat` in sorted order: np.partition's answer, exactly.

    A large array is first narrowed to the values between two bounds read from a sorted sample
    (three comparison passes, a few tens of microseconds), so that the selection runs on a tenth
    of it; a full partition of a 200x200 image cost 0.27 ms. Counting what lies below, inside and
    above the bounds proves the ranks are inside (NaNs fail the count); if not, the whole array
    is partitioned, as before.
    """
    n = flat.size
    if n >= BRACKET_FROM:
        # An odd step: an even one on a 256-wide image (step 64) read only 4 of its columns, the
        # bounds missed the canvas's ranks half the time, and the whole array was partitioned.
        sample = np.sort(flat[:: (n // SAMPLE_SIZE) | 1])
        m = sample.size
        lo = sample[max(0, ranks[0] * m // n - SAMPLE_MARGIN)]
        hi = sample[min(m - 1, ranks[-1] * m // n + SAMPLE_MARGIN)]
        below = int(np.count_nonzero(flat < lo))
        inside = flat[(flat >= lo) & (flat <= hi)]
        above = int(np.count_nonzero(flat > hi))
        if below + inside.size + above == n and below <= ranks[0] and ranks[-1] < below + inside.size:
            return _partition_at(inside, [r - below for r in ranks])
    return _partition_at(flat, ranks)


def _partition_at(a: np.ndarray, ranks: list[int]) -> list[float]:
    """The order statistics at `ranks` (one rank, or two; sorted) of `a`, as np.partition finds them.

    numpy 2.x selects a single kth with a SIMD routine that on this AVX2 EPYC beats the introselect
    a list of ranks gets (fresh arrays: 38 against 42 us on 3,600 float64s, 40 against 68 us on
    6,000 float32s). Two neighbouring ranks, as every even-sized median needs, are then one
    selection of the upper and a max of what lies below it: the same value, without a second pass
    of the selection. A NaN at the rank (numpy puts NaNs last) takes the plain way.
    """
    if len(ranks) == 2 and ranks[1] == ranks[0] + 1:
        part = np.partition(a, ranks[1])
        upper = part[ranks[1]]
        if not np.isnan(upper):
            return [float(part[: ranks[1]].max()), float(upper)]
    if len(ranks) == 1:
        return [float(np.partition(a, ranks[0])[ranks[0]])]
    part = np.partition(a, ranks)
    return [float(part[r]) for r in ranks]


def median(a: np.ndarray) -> float:
    """The median, equal to numpy's over float64 on every platform, without the float64 copy.

    Selecting in float32 finds the same middle elements as float64 would; only their mean is
    taken in float64, as np.median does.
    """
    flat = np.ravel(a)
    n = flat.size
    k = n // 2
    if n % 2:
        return _select(flat, [k])[0]
    below, middle = _select(flat, [k - 1, k])
    return (below + middle) / 2.0


def quantile(a: np.ndarray, q: float) -> float:
    """np.quantile(a, q) over float64 (linear interpolation), without the float64 copy.

    The same arithmetic as numpy's "linear" method (its virtual index and its two-sided lerp),
    on the two elements a float32 partition puts in place.
    """
    flat = np.ravel(a)
    n = flat.size
    virtual = (n - 1) * q  # numpy's "linear"
    below = min(max(math.floor(virtual), 0), n - 1)
    above = min(below + 1, n - 1)
    gamma = virtual - below
    picked = _select(flat, sorted({below, above}))
    lo, hi = picked[0], picked[-1]
    diff = hi - lo
    return hi - diff * (1.0 - gamma) if gamma >= 0.5 else lo + diff * gamma
