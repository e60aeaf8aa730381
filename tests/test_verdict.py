from __future__ import annotations

import math

import numpy as np
import pytest

from vgtrack.verdict import RULE, chance_level, diagnose, gradient_ratio

LOSS = [0.69] * 4


@pytest.mark.parametrize("first, output, losses, dead, expected", [
    ([1e-5, 2e-5, 1e-5, 1e-5], [1e-2, 1e-2, 2e-2, 1e-2], LOSS, 0.0, "vanishing"),  # ratio 1/1000
    ([5e-3, 5e-3, 5e-3, 5e-3], [1e-2, 1e-2, 1e-2, 1e-2], LOSS, 0.0, "healthy"),  # ratio 1/2
    ([2.0, 2.0, 2.0, 2.0], [1e-2, 1e-2, 1e-2, 1e-2], LOSS, 0.0, "exploding"),  # ratio 200
    ([5e-3] * 4, [1e-2] * 4, [0.69, 0.7, float("nan"), float("nan")], 0.0, "exploding"),  # the loss diverged
    ([5e-3] * 4, [1e-2] * 4, LOSS, 0.6, "dead"),  # 60% of hidden units never fire
    ([1e-5] * 4, [1e-2] * 4, LOSS, 0.5, "dead"),  # dead is checked before vanishing
    ([0.0] * 4, [0.0] * 4, LOSS, 0.0, "vanishing"),  # nothing flows at all
    ([1e-3, 1e-3, 1e-3, 1.0], [1e-2, 1e-2, 1e-2, 1e-2], LOSS, 0.0, "healthy"),  # one spike: the median decides
])
def test_diagnosis(first, output, losses, dead, expected):
    assert diagnose(first, output, losses, dead, 0.8, 0.5).diagnosis == expected


@pytest.mark.parametrize("accuracy, chance, learned", [(0.59, 0.5, False), (0.60, 0.5, True), (0.84, 0.5, True), (0.65, 0.6, False), (float("nan"), 0.5, False)])
def test_learned_means_clearly_above_chance(accuracy, chance, learned):
    assert diagnose([1e-3], [1e-3], [0.5], 0.0, accuracy, chance).learned is learned


def test_gradient_ratio_edges():
    assert gradient_ratio([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) == 2.0
    assert gradient_ratio([0.0, 1.0], [0.0, 0.0]) == math.inf  # an epoch with output 0 but a first-layer gradient
    assert gradient_ratio([], []) == 0.0


def test_chance_is_the_larger_class():
    assert chance_level(np.array([0, 0, 0, 1])) == 0.75
    assert chance_level(np.array([0, 1])) == 0.5


def test_rule_text_names_every_verdict():
    for word in ("exploding", "dead", "vanishing", "healthy", "chance"):
        assert word in RULE
