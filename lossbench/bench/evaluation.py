"""The test's own work per image: what every test image costs beyond the forward pass (per-class counts, HD95
and NSD, focus-class objects: :func:`lossbench.metrics.image_scores`), on street scenes the size of CamVid's.

The reference, measured in the same run: the same scores with SciPy's distance transform for every class (what
lossbench did before it took a k-d tree of the edge pixels where few lie in a large box). Both give the same
numbers bit for bit (the tests hold them to it). The test's share of a whole run's wall time is the runs' own
measure (each record keeps ``test_s`` beside ``wall_s``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

CLASSES = 12  # CamVid's 11 and a void label (11)
VOID = 11


def street_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street scene's class ids: sky, buildings, road and pavement in bands; cars, trees, a fence; thin poles,
    small signs, pedestrians and cyclists (the rare classes); a void border."""
    m = np.full((h, w), 1, np.int64)  # building
    horizon, road = int(h * rng.uniform(0.3, 0.4)), int(h * rng.uniform(0.6, 0.7))
    m[: int(horizon * 0.7)] = 0
    m[road:] = 3
    m[road : road + (h - road) // 6] = 4
    m[road - 10 : road, : w // 2] = 7  # fence
    for _ in range(rng.integers(2, 5)):
        y, x, s = rng.integers(horizon, road), rng.integers(0, w - 60), rng.integers(20, 50)
        m[y : y + s, x : x + 2 * s] = 8  # car
    for _ in range(rng.integers(1, 4)):
        x = rng.integers(0, w - 3)
        m[horizon - 40 : road, x : x + 3] = 2  # pole
    for cls, size in ((6, 6), (9, 10), (10, 12)):  # sign, pedestrian, cyclist
        y, x = rng.integers(horizon, road - size), rng.integers(0, w - size)
        m[y : y + 2 * size, x : x + size] = cls
    m[:2], m[-2:] = VOID, VOID
    return m


def early_prediction(rng: np.random.Generator, target: np.ndarray) -> np.ndarray:
    """An early model's prediction: the target's edges a few pixels off and 1 % of the pixels speckled."""
    pred = np.roll(target, (3, -2), axis=(0, 1))
    speckle = rng.random(target.shape) < 0.01
    pred[speckle] = rng.integers(0, VOID, int(speckle.sum()))
    return np.where(pred == VOID, 3, pred)


def bench_evaluation(images: int, size: tuple[int, int] = (360, 480)) -> dict[str, Any]:
    """Milliseconds per test image of the test's metrics, as lossbench computes them and with the distance transform
    for every class (the reference), the best of three passes over ``images`` masks of ``size``."""
    import lossbench.metrics as metrics

    rng = np.random.default_rng(0)
    pairs = [(early_prediction(rng, t), t) for t in (street_mask(rng, *size) for _ in range(images))]
    focus = 2  # the pole: the rarest
    kd = metrics.KD_PER_POINT
    times = {}
    try:
        for name, per_point in (("lossbench", kd), ("distance transform for every class", float("inf"))):
            metrics.KD_PER_POINT = per_point
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for p, t in pairs:
                    metrics.image_scores(p, t, CLASSES, VOID, focus, 0.1, 2.0)
                best = min(best, (time.perf_counter() - t0) / len(pairs))
            times[name] = 1000 * best
    finally:
        metrics.KD_PER_POINT = kd
    return {"size": list(size), "images": images, "ms_per_image": times["lossbench"],
            "reference_ms_per_image": times["distance transform for every class"],
            "ratio": times["lossbench"] / times["distance transform for every class"]}  # fmt: skip
