"""Simulated suites for testing the report's statistics: per-image TP/FP/FN counts of runs whose skill
has a training (seed) effect, an effect of each test image, and a run × image interaction.

A run of loss ``l`` with seed ``k`` has skill ``mu_l + tau * z`` (``z`` standard normal, drawn anew for
every run: seed effects do not agree across losses, as measured on real suites). On a test image
``i`` of difficulty ``d_i`` it finds each object pixel with probability ``sigmoid(skill + d_i + e)``
(``e``: the run × image interaction) and adds false positives in proportion to what it misses. The
test images are drawn once per suite and shared by every run, as in a real suite.
"""

from __future__ import annotations

import numpy as np

SUPPORT = (4000, 300, 12)  # pixels per image: background, an object class, a rare class


def test_set(rng: np.random.Generator, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """``(support [N, C], difficulty [N])`` of a test set: class pixels per image, and each image's difficulty."""
    support = np.stack([rng.poisson(s, n_images) for s in SUPPORT], axis=1).astype(np.int64)
    support[:, 2] *= rng.random(n_images) < 0.7  # the rare class is absent from some images
    return support, rng.normal(0.0, 0.6, n_images)


def run_counts(rng: np.random.Generator, support: np.ndarray, difficulty: np.ndarray, skill: float,
               interaction: float = 0.3) -> np.ndarray:  # fmt: skip
    """``[N, C, 3]`` TP, FP, FN of one run of the given skill (logit scale; classes get harder with rarity)."""
    n, c = support.shape
    offset = np.array([2.5, 0.5, -0.5])[:c]  # background is easy, the rare class hard
    logit = skill + offset[None, :] + difficulty[:, None] + rng.normal(0.0, interaction, (n, c))
    p = 1.0 / (1.0 + np.exp(-logit))
    tp = rng.binomial(support, p)
    fn = support - tp
    fp = rng.poisson(0.5 * (support * (1 - p)) + 0.2)
    return np.stack([tp, fp, fn], axis=-1).astype(np.int64)


def suite_counts(rng: np.random.Generator, means: dict[str, float], seeds: int, n_images: int = 96,
                 tau: float = 0.15) -> dict[str, np.ndarray]:  # fmt: skip
    """``{loss: [S, N, C, 3]}``: ``seeds`` runs of each loss (skill ``means[loss] + tau * z``) on one shared test set."""
    support, difficulty = test_set(rng, n_images)
    return {loss: np.stack([run_counts(rng, support, difficulty, mu + tau * rng.standard_normal()) for _ in range(seeds)])
            for loss, mu in means.items()}  # fmt: skip


class LinearSuite:
    """A suite of losses on one drawn test set, scored by a linear model (fast enough for thousands of suites).

    Run ``s`` of loss ``l`` scores ``μ_l + a_ls + b_i + e_lsi`` on test image ``i``: ``a`` a seed effect drawn
    for every run (variance 0.8), ``b`` the image's difficulty shared by all losses, ``e`` run × image noise
    (adding 0.2 to the variance of a run's score), so a run's score spreads by one *seed SD* over seeds,
    and the test images drawn add ``image_ratio`` seed variances to a loss's score (none to a difference,
    which is paired by image). ``spread`` scales a loss's seed effect and noise (its seed SD, in seed SDs; 1 by
    default): :data:`COMMITTED_SPREAD` is the default suite's profile. A run's score is its mean over the images; :meth:`scores` gives the report's
    :class:`~lossbench.report.stats.LossScores` of a loss's first ``n`` seeds, with the same image bootstrap
    draws for every loss, as the report makes them.
    """

    def __init__(self, rng: np.random.Generator, means: dict[str, float], max_seeds: int, n_images: int = 40,
                 image_ratio: float = 1.0, replicates: int = 200, spread: dict[str, float] | None = None):  # fmt: skip
        from lossbench.report.stats import image_draws

        n = n_images
        difficulty = rng.normal(0.0, np.sqrt(image_ratio * n), n)
        self.means = dict(means)
        sd = {loss: (spread or {}).get(loss, 1.0) for loss in means}  # a loss's seed SD, in seed SDs
        self.values = {loss: mu + sd[loss] * (rng.normal(0.0, np.sqrt(0.8), (max_seeds, 1))
                                              + rng.normal(0.0, np.sqrt(0.2 * n), (max_seeds, n)))
                       + difficulty[None, :] for loss, mu in means.items()}  # fmt: skip
        self.weights = image_draws(n, replicates, seed=int(rng.integers(1 << 31))) / n

    def scores(self, loss: str, n: int):
        from lossbench.report.stats import LossScores

        x = self.values[loss][:n]
        return LossScores(x.mean(1), self.weights @ x.mean(0))


COMMITTED_SPREAD = (1.0, 1.0, 1.15, 0.95, 0.3, 1.3, 1.1, 0.38, 0.25, 0.27, 0.18, 0.18, 1.45, 1.8)
"""The seed SDs of mean IoU of the committed default suite's 14 losses (``reports/default``, 3 seeds), relative to
their median: from 0.18 (collapsed losses: focal, ohem) to 1.8 (lovasz_hinge); Bartlett's p 0.013."""
