"""Temperature scaling: one number that makes a trained model's probabilities honest.

A model trained with label smoothing (lenet's default, 0.1) learns to put about 0.91 on its top class
even where it is sure and right, so `lenet predict` would say "91%" for a digit it gets right 99.9% of
the time. Guo et al. (2017), "On calibration of modern neural networks", fix such a model after
training by dividing its logits by one temperature T, chosen to minimise the cross-entropy on
held-out data. Dividing by a positive number never changes which class is on top: accuracy, the
confusion matrix and every prediction stay exactly as they were; only the probabilities (and the
loss) move. lenet fits T on the validation split, never on the test set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

# The search brackets the inverse temperature 1/T; the fitted T is rounded so that files and --json
# carry a short, exact number.
INVERSE_RANGE = (0.05, 20.0)
ITERATIONS = 80  # golden-section steps: the bracket shrinks by 0.618 per step, far below the rounding
DIGITS = 4
# Below this many held-out images a 99%-accurate model often makes no mistake at all, and with no
# mistake the loss falls without end as T shrinks: there is nothing to fit.
MIN_IMAGES = 1000


def fit_temperature(logits: "torch.Tensor", labels: "torch.Tensor") -> float | None:
    """The temperature T > 0 that minimises the mean cross-entropy of logits / T against labels.

    The cross-entropy of b * logits is convex in b (a log-sum-exp of linear functions minus a linear
    one), so a golden-section search over b = 1/T finds its minimum; no optimizer state, no
    randomness, the same T for the same logits. None when there is nothing to fit: fewer than
    MIN_IMAGES images, or a minimum at the edge of the range (every image right, or every one wrong).
    """
    import torch.nn.functional as F

    if labels.numel() < MIN_IMAGES:
        return None
    z = logits.detach().double().cpu()
    y = labels.detach().long().cpu()
    if bool((z.argmax(1) == y).all()):
        # No mistake: the loss falls toward 0 without end as T shrinks, and reaches 0.0 in floating point
        # inside the range, where the search below could stop on the flat floor.
        return None

    def nll(b: float) -> float:
        return F.cross_entropy(z * b, y).item()

    lo, hi = INVERSE_RANGE
    ratio = (5**0.5 - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = nll(c), nll(d)
    for _ in range(ITERATIONS):
        if fc < fd:  # on a tie (a flat floor of the loss) move up, toward the edge check below
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = nll(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = nll(d)
    b = (lo + hi) / 2
    if not INVERSE_RANGE[0] * 1.01 < b < INVERSE_RANGE[1] * 0.99:
        return None  # the loss still falls at the edge: no finite temperature minimises it
    return round(1.0 / b, DIGITS)


def calibrated_logits(logits: "torch.Tensor", temperature: float) -> "torch.Tensor":
    """logits / temperature, as a multiplication by 1/T; `LeNet5.classifier` applies it too."""
    return logits if temperature == 1.0 else logits * (1.0 / temperature)
