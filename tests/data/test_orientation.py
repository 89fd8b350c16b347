"""A phone photo's orientation, wherever Pillow finds it (EXIF before or after the pixels, XMP, a PNG's
text copy of EXIF, WebP), is honoured: images with nowhere to hold one skip the lookup, these do not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest


def _rotated_image(path: Path, where: str, upside_down: np.ndarray) -> None:
    """Save `upside_down` with the orientation "rotate 180 to display" in one of the places Pillow reads it from."""
    import struct
    import zlib

    from PIL import Image, PngImagePlugin

    exif = Image.Exif()
    exif[0x0112] = 3
    img = Image.fromarray(upside_down)
    if where == "webp exif":
        img.save(path, format="WEBP", lossless=True, exif=exif)
        return
    info = PngImagePlugin.PngInfo()
    if where == "png xmp":
        info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="3"/></x:xmpmeta>')
    elif where == "png raw profile":
        data = exif.tobytes()
        info.add_text("Raw profile type exif", f"\nexif\n{len(data):8d}\n{data.hex()}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, **({"exif": exif} if where.startswith("png exif") else {}))
    png = buf.getvalue()
    if where == "png exif after pixels":  # move the eXIf chunk behind IDAT: Pillow reads it only on load()
        chunks, at = [], 8
        while at < len(png):
            (length,) = struct.unpack(">I", png[at : at + 4])
            chunks.append(png[at : at + 12 + length])
            at += 12 + length
        exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
        chunks.remove(exif_chunk)
        chunks.insert(len(chunks) - 1, exif_chunk)  # before IEND
        png = png[:8] + b"".join(chunks)
        assert zlib.crc32(exif_chunk[4:-4]) == struct.unpack(">I", exif_chunk[-4:])[0]
    path.write_bytes(png)


WHERE_ORIENTATION = ["png exif", "png exif after pixels", "png xmp", "png raw profile", "webp exif"]


@pytest.mark.parametrize("where", WHERE_ORIENTATION)
def test_an_orientation_is_honoured_wherever_pillow_finds_one(tmp_path, where):
    """Orientation is looked up only where an image can hold one: each of those places is still read."""
    from lenet_cli.data.sources import load_gray

    upright = np.zeros((30, 20), np.uint8)
    upright[2:8, 3:17] = 255  # a bar near the top
    path = tmp_path / ("rotated.webp" if where.startswith("webp") else "rotated.png")
    _rotated_image(path, where, upright[::-1, ::-1].copy())
    gray, _ = load_gray(path)
    assert np.array_equal(np.round(gray * 255).astype(np.uint8), upright)
