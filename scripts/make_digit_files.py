"""Write N small image files of drawn digits into a folder: the input of the README's large-folder timing.

    python scripts/make_digit_files.py DIR --count 100000

Each file is a 40x40 greyscale PNG of a digit drawn with a few strokes (dark ink on white), named
00000.png, 00001.png, ...; the same files every time (no randomness).
"""

from __future__ import annotations

import argparse
from pathlib import Path

STROKES = {  # a digit as polylines in a 40x40 box
    0: [[(12, 6), (28, 6), (30, 34), (10, 34), (12, 6)]], 1: [[(20, 5), (20, 35)]],
    2: [[(10, 10), (28, 6), (28, 18), (10, 34), (30, 34)]], 3: [[(10, 6), (28, 8), (16, 20), (28, 30), (10, 34)]],
    4: [[(24, 34), (24, 5), (8, 24), (32, 24)]], 5: [[(28, 6), (12, 6), (10, 18), (28, 22), (26, 34), (10, 32)]],
    6: [[(26, 6), (12, 20), (12, 34), (28, 30), (26, 20), (12, 22)]], 7: [[(8, 6), (30, 6), (16, 35)]],
    8: [[(20, 20), (10, 10), (20, 4), (30, 10), (20, 20), (10, 30), (20, 36), (30, 30), (20, 20)]],
    9: [[(28, 18), (12, 16), (14, 6), (28, 8), (28, 34)]],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    args.folder.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        img = Image.new("L", (40, 40), 255)
        draw = ImageDraw.Draw(img)
        shift = (i // 10) % 5 - 2
        for line in STROKES[i % 10]:
            draw.line([(x + shift, y) for x, y in line], fill=0, width=3 + i % 3)
        img.save(args.folder / f"{i:05d}.png")


if __name__ == "__main__":
    main()
