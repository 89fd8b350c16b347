"""Image files: decode one into grey levels (and alpha), and expand files, folders and globs.

Only Pillow and numpy: `lenet predict` must not import torch.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import warnings
from pathlib import Path

import numpy as np

from lenet_cli.data.urls import MAX_DOWNLOAD_BYTES, URL_TIMEOUT_S, fetch_url, is_url
from lenet_cli.errors import ImageError, first_line
from lenet_cli.utils.fileio import not_a_file

MAX_PIXELS = 50_000_000  # refuse absurdly large images (decompression bombs)
# A JPEG larger than this on its long side is decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft mode,
# nearly free in the decoder), never below it: a 12 MP photo becomes 1000x750 in a tenth of the time
# and memory. Preprocessing works at 256 pixels and fits the digit into 80, so nothing is lost.
DECODE_MIN_SIDE = 800
STDIN = "-"  # `lenet predict -`: one image from stdin
SUPPORTED = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class _UnsupportedMode(Exception):
    """A decoded image whose pixel format cannot be made grey."""


def load_gray(path: Path, min_side: int | None = DECODE_MIN_SIDE) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode an image file into float32 grey levels in [0, 1] and, if it has one, an alpha map.

    A large JPEG comes out at reduced scale, its long side at least `min_side` (None: full size).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0:
        # The usual case, a non-empty regular file, in one stat: the checks below cost five (about
        # 25 us a file, a tenth of an MNIST-style PNG's decode). Anything else takes them for its message.
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ImageError(f"{path}: cannot read the file ({exc.strerror or exc}).", kind="unreadable") from exc
        with fh:
            return decode_gray(fh, str(path), min_side=min_side)
    if not path.exists():
        raise ImageError(f"{path}: file not found.", kind="not_found")
    if path.is_dir():
        if os.access(path, os.R_OK | os.X_OK):
            raise ImageError(f"{path}: a folder with no images in it (its subfolders are not searched; "
                             f"a quoted '{path}/**/*.png' searches them).", kind="not_found")
        raise ImageError(f"{path}: is a folder whose images could not be listed.", kind="unreadable")
    what = not_a_file(path)
    if what is not None:  # never opened: a named pipe would block the whole run
        raise ImageError(f"{path}: is {what}, not an image file.", kind="not_a_file")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; opened here to tell "unreadable" apart
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the file ({exc.strerror or exc}).", kind="unreadable") from exc
    with fh:
        if stat.S_ISREG(path.stat().st_mode) and path.stat().st_size == 0:  # a pipe reports 0 too
            raise ImageError(f"{path}: the file is empty (0 bytes).", kind="empty")
        return decode_gray(fh, str(path), min_side=min_side)


def load_gray_bytes(data: bytes, where: str = "upload", max_pixels: int = MAX_PIXELS,
                    min_side: int | None = DECODE_MIN_SIDE) -> tuple[np.ndarray, np.ndarray | None]:
    """`load_gray` for an image held in memory (an upload, stdin, a download): the same checks and error kinds.

    `where` only labels the errors ("-" for stdin, the URL, "upload").
    """
    if not data:
        raise ImageError(f"{where}: the file is empty (0 bytes).", kind="empty")
    return decode_gray(io.BytesIO(data), where, max_pixels, min_side)


def decode_gray(fh, where: str, max_pixels: int = MAX_PIXELS,
                min_side: int | None = DECODE_MIN_SIDE) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode an open binary file into grey levels and alpha; ImageError (named after `where`) if it cannot be.

    `max_pixels` is checked from the header, before any pixel is decoded, so a decompression
    bomb is refused without the memory it asks for. A JPEG whose long side is over twice
    `min_side` is decoded at the smallest of 1/2, 1/4, 1/8 scale that keeps it (None: full size).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        # Pillow warns about damaged metadata ("Corrupt EXIF data", "Tag data larger than file") on
        # stderr, over the one line the user gets; whether the pixels decode is what counts.
        warnings.simplefilter("ignore")
        # Pillow only warns between 1x and 2x its pixel limit; here that is an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(fh) as img:
                if img.width * img.height > max_pixels:
                    raise ImageError(f"{where}: image is {img.width}x{img.height}, too large "
                                     f"(limit {max_pixels:,} pixels).", kind="too_large")
                if img.width == 0 or img.height == 0:
                    raise ImageError(f"{where}: the image has no pixels ({img.width}x{img.height}).", kind="empty")
                img.seek(0)  # first frame of an animated GIF/WebP/TIFF
                if min_side is not None and img.format == "JPEG" and max(img.size) >= 2 * min_side:
                    w, h = img.size
                    img.draft(None, (-(-w * min_side // max(w, h)), -(-h * min_side // max(w, h))))
                img.load()
                return _to_gray(_upright(img, ImageOps))
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{where}: image is too large ({exc}).", kind="too_large") from exc
        except _UnsupportedMode as exc:
            raise ImageError(f"{where}: unsupported pixel format {exc}.", kind="not_image") from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{where}: not an image (Pillow cannot identify its format).", kind="not_image") from exc
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            # Truncated downloads and damaged files end up here ("image file is truncated", ...).
            detail = first_line(exc)
            raise ImageError(f"{where}: damaged or truncated image ({detail}).", kind="corrupt") from exc


def read_stdin(max_bytes: int | None = None) -> bytes:
    """One image piped to `lenet predict -`, at most `max_bytes` (default MAX_DOWNLOAD_BYTES)."""
    max_bytes = MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes
    stream = sys.stdin.buffer if sys.stdin is not None else None
    if stream is None or stream.isatty():
        raise ImageError("-: stdin is a terminal, not an image. Pipe one in: cat digit.png | lenet predict -",
                         kind="empty")
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"-: more than the limit of {max_bytes:,} bytes on stdin.", kind="too_large")
    return data


def load_source(source: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels and alpha of one input: an image file, an http(s) URL, or "-" for stdin."""
    if isinstance(source, str) and source == STDIN:
        data = read_stdin()
        if not data:
            raise ImageError("-: nothing came on stdin (0 bytes).", kind="empty")
        return load_gray_bytes(data, STDIN)
    if isinstance(source, str) and is_url(source):
        data, content_type = fetch_url(source, MAX_DOWNLOAD_BYTES, URL_TIMEOUT_S)  # read here: tests set them
        try:
            return load_gray_bytes(data, source)
        except ImageError as exc:
            if exc.kind == "not_image" and not content_type.startswith("image/"):  # usually an HTML page
                raise ImageError(f"{source}: not an image (the server sent {content_type}).", kind="not_image") from None
            raise
    return load_gray(Path(source))


# Where Pillow finds an orientation (Image.getexif): an EXIF block, a PNG's text copy of one, XMP, TIFF tags.
ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")


def _upright(img, image_ops):
    """Apply the EXIF orientation of phone photos.

    Pillow's exif_transpose also rewrites the EXIF block and fails on a malformed tag
    (struct.error, TypeError, ...); then the orientation is applied by hand, and a
    block too damaged to read is ignored. An image with nowhere to hold an orientation
    (most PNGs) skips the lookup: it cost a third of an MNIST-style PNG's decode.
    """
    if not hasattr(img, "tag_v2") and not any(key in img.info for key in ORIENTATION_SOURCES):
        return img
    try:
        return image_ops.exif_transpose(img) or img
    except Exception:  # noqa: BLE001
        pass
    from PIL import Image

    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001
        return img
    t = Image.Transpose
    method = {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE,
              6: t.ROTATE_270, 7: t.TRANSVERSE, 8: t.ROTATE_90}.get(orientation)
    return img.transpose(method) if method is not None else img


def _to_gray(img) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels in [0, 1] and the alpha map (None when fully opaque) of a decoded image."""
    mode = img.mode
    alpha = None
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        # Scale by the bit depth the values fit in: floats in [0, 1], 8-bit data stored in a
        # 16-bit file, 12-bit scans, full 16-bit.
        hi = next((h for h in (1.0, 255.0, 4095.0, 65535.0) if top <= h), top)
        return np.clip(arr / hi, 0, 1), None
    if mode in ("RGBA", "LA", "PA"):
        band = img.getchannel("A")
        # Opaque (every alpha >= 0.99, i.e. >= 253 of 255): an MNIST crop saved as RGBA must still
        # pass through, and the page's canvas needs no alpha map. Pillow's extrema cost no copy.
        if band.getextrema()[0] < 253:
            alpha = np.asarray(band, dtype=np.float32) / 255.0
    try:
        gray = np.asarray(img if mode == "L" else img.convert("L"), dtype=np.float32) / 255.0
    except ValueError as exc:  # e.g. LAB, which Pillow cannot turn into grey
        raise _UnsupportedMode(mode) from exc
    return gray, alpha


def expand_inputs(items: list[str]) -> list[Path | str]:
    """Files, directories (their images, sorted) and glob patterns -> a list of paths.

    A name that matches nothing is kept, so it is reported as 'file not found' in its row.
    URLs and "-" (stdin) stay strings: `load_source` reads them.
    """
    import glob

    def folder(p: Path) -> list[Path]:
        try:
            # Hidden files (macOS "._x.png" resource forks, ".DS_Store") are not the user's images.
            return sorted(q for q in p.iterdir()
                          if q.is_file() and q.suffix.lower() in SUPPORTED and not q.name.startswith("."))
        except OSError:
            return [p]  # reported in its row: a folder that cannot be listed

    paths: list[Path | str] = []
    for item in items:
        if item == STDIN or is_url(item):
            paths.append(item)
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            paths += folder(p) or [p]  # a folder without images is reported in its row, not skipped
        elif p.exists() or not any(ch in item for ch in "*?["):
            paths.append(p)  # a real file named "z[1].png" is that file, not a pattern
        else:
            matches = [Path(m) for m in glob.glob(str(p), recursive=True)]
            # The images of a folder the pattern matches are read, as with the shell's expansion of it:
            # 'scans/*' reads those of scans/'s subfolders. Each once, in order: 'scans/**' matches a
            # file and the folder it is in.
            paths += sorted({q for m in matches for q in (folder(m) if m.is_dir() else [m])})
            if not matches:
                paths.append(p)
    return paths
