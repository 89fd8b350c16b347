"""The fast preprocessing gives the reference's 28x28 output (tests/data/preprocess_reference.py) exactly.

Exactly on these inputs. The lighting fit (a flat-background shortcut, a 32-pixel copy) enters the
output only through two decisions, the polarity and whether the background map runs; on real
images they differ from the reference's on 3 of 7,591 (docs/performance.md), with the same
validation figures.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

import preprocess_reference as reference
from lenet_cli.bench import images
from lenet_cli.data import lighting, order_stats, preprocess, shape_notes
from lenet_cli.data.sources import load_gray_bytes


def _kinds(seed: int) -> list[bytes]:
    digits = images.font_digits(6, seed)
    return ([images.canvas_png(d) for d in digits] + [images.paper_photo_jpeg(d, seed=i) for i, d in enumerate(digits)]
            + [images.drawing_png(digits[0], (300, 220)), images.mnist_png(digits[1])])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_path_matches_the_reference_pixel_for_pixel(seed):
    for data in _kinds(seed):
        gray, alpha = load_gray_bytes(data)
        want, got = reference.to_mnist(gray, alpha), preprocess.to_mnist(gray, alpha)
        assert np.array_equal(want.pixels, got.pixels)
        assert (want.inverted, want.passthrough) == (got.inverted, got.passthrough)
        assert reference.shape_notes(want.pixels) == shape_notes.shape_notes(got.pixels)


def test_median_and_quantile_equal_numpys_over_float64():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 17, 100, 4096):
        a = (rng.random(n) * 3).astype(np.float32)
        assert order_stats.median(a) == float(np.median(a.astype(np.float64)))
        assert order_stats.quantile(a.copy(), 0.95) == float(np.quantile(a.astype(np.float64), 0.95))


def test_large_selections_narrowed_by_a_sample_stay_exact():
    # From BRACKET_FROM elements a sample narrows the array first: skewed data, many ties, sorted
    # input and a NaN (which must fall back to the whole partition) give numpy's answer all the same.
    rng = np.random.default_rng(1)
    n = order_stats.BRACKET_FROM
    cases = [rng.normal(size=40_000) ** 3, rng.integers(0, 4, n + 1) / 3, np.sort(rng.random(n + 2)),
             np.abs(rng.normal(size=65_537)), np.r_[np.zeros(30_000), rng.random(10_000)]]
    for a in (c.astype(np.float32) for c in cases):
        assert order_stats.median(a) == float(np.median(a.astype(np.float64)))
        for q in (0.05, 0.5, 0.95, 1.0):
            assert order_stats.quantile(a, q) == float(np.quantile(a.astype(np.float64), q))
    with_nan = rng.random(n * 2).astype(np.float32)
    with_nan[7] = np.nan
    assert order_stats.median(with_nan) == (float(np.partition(with_nan, n - 1)[n - 1]) + float(np.partition(with_nan, n)[n])) / 2


def test_neighbouring_ranks_from_one_selection_are_partitions():
    # Two neighbouring ranks come from one selection of the upper and a max below it; a NaN
    # at the upper rank takes np.partition's own way. Ties, signed zeros and NaNs past the rank.
    rng = np.random.default_rng(2)
    for n in (2, 4, 10, 1000, 5000):
        for a in (rng.integers(0, 3, n) / 2, rng.normal(size=n), np.r_[np.full(n - 1, -0.0), 0.0]):
            a = a.astype(np.float32)
            a[rng.integers(0, n, n // 3)] = np.nan
            for ranks in ([n // 2 - 1, n // 2], [0, 1], [n - 2, n - 1]):
                part = np.partition(a, ranks)
                want, got = [float(part[r]) for r in ranks], order_stats._partition_at(a, ranks)
                assert np.array_equal(want, got, equal_nan=True)


@pytest.mark.parametrize("size", [1, 3, 5, 7, 9, 11, 13, 15])
@pytest.mark.parametrize("shape", [(40, 57), (1, 9), (6, 2)])
def test_rank_filter_is_pillows(size, shape):
    # Every odd size (the runs are built by doubling, so 3, 7 and 15 end on different steps),
    # and images narrower than the filter, where every window reaches into Pillow's edge padding.
    a = (np.random.default_rng(size).random(shape) * 255).astype(np.uint8)
    img = Image.fromarray(a)
    assert np.array_equal(lighting.rank_filter(a, size, True), np.asarray(img.filter(ImageFilter.MaxFilter(size))))
    assert np.array_equal(lighting.rank_filter(a, size, False), np.asarray(img.filter(ImageFilter.MinFilter(size))))


def test_a_one_row_image_still_fits_its_lighting():
    gray = np.linspace(0.2, 0.8, 50, dtype=np.float32)[None, :]  # y and y^2 are constant: a singular basis
    residual, spread = lighting.residual_from_lighting(gray)
    assert residual.shape == (1, 50) and np.isfinite(residual).all() and spread > 0.5


def test_a_flat_background_skips_the_fit(monkeypatch):
    """An even border, most of the picture at its level and almost nothing in between: a flat field
    (range 0, the residual the image minus that level), without a single least-squares solve."""
    canvas = np.zeros((280, 280), np.float32)
    canvas[60:220, 120:150] = 1.0  # a white bar on black: the serve page's canvas
    monkeypatch.setattr(lighting, "_least_squares", lambda *a: pytest.fail("the fit ran on a flat canvas"))
    residual, spread = lighting.residual_from_lighting(canvas)
    assert spread == 0.0 and np.array_equal(residual, canvas)


@pytest.mark.parametrize("light", ["shadow", "spotlight"])
def test_uneven_light_inside_an_even_border_is_still_fitted(light):
    """A soft shadow or a spotlight that leaves the border even is made of values between the paper's
    level and the ink's: the fit runs, the background map follows the light, the output is the reference's."""
    y, x = np.mgrid[-1:1:240j, -1:1:240j]
    if light == "shadow":  # a page at 0.7 with a soft central shadow 0.2 deep
        gray = (0.7 - 0.2 * np.clip(1 - np.hypot(x, y) / 0.7, 0, 1)).astype(np.float32)
    else:  # bright in the middle, clipped to an even 0.3 towards the rim
        gray = np.maximum(0.8 - 0.5 * (x**2 + y**2), 0.3).astype(np.float32)
    gray[40:200, 115:125] = 0.15  # a dark "1"
    residual, spread = lighting.residual_from_lighting(gray)
    assert spread > lighting.MIN_CONTRAST
    want, got = reference.to_mnist(gray), preprocess.to_mnist(gray)
    assert np.array_equal(want.pixels, got.pixels) and want.inverted == got.inverted


def test_the_fit_solves_a_regular_system_as_lstsq_does():
    basis, products = lighting._basis(32, 32)
    values = np.random.default_rng(0).random(32 * 32)
    keep = values < 0.8
    want = np.linalg.lstsq(basis[keep], values[keep], rcond=None)[0]
    assert np.allclose(lighting._least_squares(basis, products, values, keep), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("strength, rim", [(0.2, None), (0.35, 0.3), (0.5, None), (0.5, 0.2), (0.5, 0.4)])
@pytest.mark.parametrize("ink", [0.1, 0.4])
def test_vignettes_get_the_references_output(strength, rim, ink):
    """A flash photo of paper: bright in the middle, darker (or evenly clipped) towards the rim, with
    noise. The lighting decisions, and so the output, are the reference's (a 32-pixel fit flipped the
    polarity of 3 of 72 such pages: the fit stays at 64)."""
    y, x = np.mgrid[-1:1:240j, -1:1:240j]
    gray = 0.85 - strength * (x**2 + y**2)
    gray = (gray if rim is None else np.maximum(gray, rim)).astype(np.float32)
    gray[40:200, 112:126] = np.minimum(gray[40:200, 112:126], ink)
    gray = np.clip(gray + np.random.default_rng(0).normal(0, 0.02, gray.shape).astype(np.float32), 0, 1)
    want, got = reference.to_mnist(gray), preprocess.to_mnist(gray)
    assert np.array_equal(want.pixels, got.pixels) and want.inverted == got.inverted


@pytest.mark.parametrize("kept", ["one row", "a row and a column"])
def test_a_singular_fit_takes_the_minimum_norm_answer(kept):
    """Kept pixels along one row, or on a row and a column (a conic: xy, x and y are then dependent), make
    the 6x6 system singular; inverting it would return arbitrary coefficients without failing."""
    basis, products = lighting._basis(32, 32)
    values = np.random.default_rng(1).random(32 * 32)
    rows, cols = np.divmod(np.arange(32 * 32), 32)
    keep = (rows == 5) if kept == "one row" else (rows == 5) | (cols == 7)
    want = np.linalg.lstsq(basis[keep], values[keep], rcond=None)[0]
    assert np.allclose(lighting._least_squares(basis, products, values, keep), want, atol=1e-8)


def test_a_big_jpeg_is_decoded_in_draft_mode_but_not_below_the_minimum_side():
    data = images.phone_jpeg(images.font_digits(1)[0], size=(2000, 1500))
    gray, _ = load_gray_bytes(data)
    assert gray.shape == (750, 1000)  # 1/2: 1/4 would be under 800 on the long side
    full, _ = load_gray_bytes(data, min_side=None)
    assert full.shape == (1500, 2000)
    assert preprocess.to_mnist(gray, None).inverted and preprocess.to_mnist(full, None).inverted


def test_shape_notes_in_closed_form_equal_the_references():
    """Speckle, thick lines at every angle, boxes of every size: the closed-form eigenvalues and the
    doubled erosion give the reference's notes on each (the reference used np.linalg.eigh and 8 ANDs)."""
    rng = np.random.default_rng(0)
    for k in range(1500):
        a = np.zeros((28, 28), np.uint8)
        if k % 3 == 0:
            a[rng.random((28, 28)) < rng.random() * 0.6] = 255
        elif k % 3 == 1:
            (y0, x0), (y1, x1) = rng.integers(0, 28, 2), rng.integers(0, 28, 2)
            for t in np.linspace(0, 1, 60):
                y, x = int(y0 + (y1 - y0) * t), int(x0 + (x1 - x0) * t)
                a[max(0, y - 1) : y + 1 + int(rng.integers(0, 3)), max(0, x - 1) : x + 2] = 255
        else:
            (h, w), (y, x) = rng.integers(1, 20, 2), rng.integers(0, 8, 2)
            a[y : y + h, x : x + w] = 255
        assert shape_notes.shape_notes(a) == reference.shape_notes(a), k
