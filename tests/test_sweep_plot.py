"""The learning-curve figure of a sweep's report draws every arm of the experiment, variants included."""

from __future__ import annotations

import matplotlib.image

from kfc_lite.sweep.budgets import BUDGETS
from kfc_lite.sweep.report import plot


def test_every_arm_is_drawn_the_gauged_variant_and_a_matched_noise_arm_too(tmp_path):
    arms = ["cql", "s4rl", "s4rl[noise_sigma=0.02]", "kfc", "kfc++", "kfc++-gauged"]
    records = [
        {
            "kind": "eval",
            "dataset": "pendulum-medium-replica",
            "method": m,
            "seed": seed,
            "steps": steps,
            "normalized_score": 10.0 * i + seed + steps / 100,
        }
        for i, m in enumerate(arms)
        for seed in (0, 1)
        for steps in (100, 200)
    ]
    records.append({"kind": "score", "dataset": "pendulum-medium-replica", "method": "cql", "seed": 0, "score": 1.0})
    path = tmp_path / "learning.png"
    drawn = plot(path, records, BUDGETS["pendulum-5k"])
    assert sorted(m for _, m in drawn) == sorted(arms)
    assert {ds for ds, _ in drawn} == {"pendulum-medium-replica"}
    assert matplotlib.image.imread(path).shape[0] > 100  # a real image was written
