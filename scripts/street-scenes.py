#!/usr/bin/env python3
"""A folder shaped like CamVid for the init walk-through: 11 classes plus a void label (value 11, beyond
classes.txt), 360x480 RGB PNGs, 367 train / 101 val / 233 test images, class shares from a few percent
down to a fraction of one (poles, signs, pedestrians, bicyclists), so `lossbench init --minutes 10`,
the dry run and `compare` can be timed on a machine without the real set (no download).

    python scripts/street-scenes.py OUT [--scale 1.0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]
VOID = 11
COLOURS = np.array([[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
                    [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192], [0, 0, 0]], np.int16)


def scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.full((h, w), 1, np.uint8)  # building
    horizon = int(h * rng.uniform(0.3, 0.45))
    mask[: int(horizon * rng.uniform(0.4, 0.9))] = 0  # sky above the buildings
    road = int(h * rng.uniform(0.6, 0.7))
    mask[road:] = 3
    kerb = int(road + (h - road) * 0.15)
    side = rng.integers(0, 2)
    cols = slice(0, w // 4) if side == 0 else slice(3 * w // 4, w)
    mask[road:kerb, :] = 4  # pavement along the road
    mask[road:, cols] = 4
    for _ in range(rng.integers(1, 4)):  # trees
        x, r = rng.integers(0, w), rng.integers(20, 60)
        yy, xx = np.ogrid[:h, :w]
        mask[((yy - horizon) ** 2 + (xx - x) ** 2 < r * r) & (yy < road)] = 5
    mask[road - 12 : road, rng.integers(0, w // 2) : rng.integers(w // 2, w)] = 7  # a fence
    for _ in range(rng.integers(1, 4)):  # cars
        x, cw, ch = rng.integers(0, w - 90), rng.integers(50, 90), rng.integers(25, 45)
        y = rng.integers(road - ch // 2, min(h - ch, road + 40))
        mask[y : y + ch, x : x + cw] = 8
    for _ in range(rng.integers(0, 3)):  # poles, with a sign on some
        x = rng.integers(0, w - 3)
        mask[horizon - 40 : road, x : x + 3] = 2
        if rng.random() < 0.5:
            mask[horizon - 40 : horizon - 28, x - 5 : x + 8] = 6
    for cls in (9, 10):  # pedestrians, bicyclists: rare
        if rng.random() < 0.6:
            x, y = rng.integers(0, w - 10), rng.integers(road - 30, h - 30)
            mask[y : y + 28, x : x + 9] = cls
    mask[-3:] = VOID  # the car's bonnet at the bottom edge: void
    image = COLOURS[mask] + rng.normal(0, 25, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--scale", type=float, default=1.0, help="split sizes × this (1: CamVid's 367/101/233)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, n in (("train", 367), ("val", 101), ("test", 233)):
        for sub in ("images", "masks"):
            (args.out / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(max(1, round(n * args.scale))):
            image, mask = scene(rng, 360, 480)
            Image.fromarray(image).save(args.out / split / "images" / f"{split}{i:04d}.png")
            Image.fromarray(mask).save(args.out / split / "masks" / f"{split}{i:04d}.png")


if __name__ == "__main__":
    main()
