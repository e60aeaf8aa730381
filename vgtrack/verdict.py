"""A run's diagnosis from its history: vanishing, exploding, dead or healthy, and did it learn.

The rule, stated once here and quoted by the README and every report (:data:`RULE`):

- ``exploding``: the loss became NaN or infinite, or the first layer's mean |gradient| is more
  than 100 times the output layer's (median over epochs);
- ``dead``: half or more of the hidden units never fire (output exactly 0 for every data point)
  with the final weights;
- ``vanishing``: the first layer's mean |gradient| is less than 1/100 of the output layer's
  (median over epochs);
- ``healthy``: none of these;

checked in that order. Separately, a run *failed to learn* when its final test accuracy is below
chance + 0.1, chance being the share of the larger class in the data it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATIO = 100.0  # first/output layer gradient ratio beyond which a gradient is vanishing or exploding
DEAD_SHARE = 0.5  # share of hidden units that never fire beyond which a network is dead
LEARN_MARGIN = 0.1  # above chance by at least this much, or it failed to learn

RULE = (
    f"exploding: NaN/inf loss, or median over epochs of (first-layer mean |grad| / output-layer mean |grad|) > {RATIO:g}; "
    f"dead: >= {DEAD_SHARE:.0%} of hidden units never fire on the data with the final weights; "
    f"vanishing: that median ratio < 1/{RATIO:g}; healthy: none of these (checked in this order). "
    f"Failed to learn: final test accuracy < chance + {LEARN_MARGIN:g}."
)


@dataclass(frozen=True)
class Verdict:
    diagnosis: str  # vanishing | exploding | dead | healthy
    learned: bool
    gradient_ratio: float  # median over epochs of first-layer / output-layer mean |gradient|
    dead_share: float


def gradient_ratio(first, output) -> float:
    """Median over epochs of ``first / output`` mean |gradient|.

    An epoch where both are 0 says nothing and is left out; if every epoch is like that, nothing
    flows at all and the ratio is 0. An output gradient of 0 under a first-layer gradient is inf.
    """
    first, output = np.asarray(first, float), np.asarray(output, float)
    keep = (output > 0) | (first > 0)
    if not keep.any():
        return 0.0
    first, output = first[keep], output[keep]
    with np.errstate(divide="ignore"):
        ratios = np.where(output > 0, first / np.where(output > 0, output, 1.0), np.inf)
    return float(np.median(ratios))


def diagnose(first: np.ndarray, output: np.ndarray, losses: np.ndarray, dead_share: float, test_accuracy: float, chance: float) -> Verdict:
    """Apply :data:`RULE` to one run's per-epoch gradients of its first and output layers.

    Example:
        >>> diagnose([1e-5, 2e-5], [1e-2, 1e-2], [0.69, 0.69], 0.0, 0.5, 0.5).diagnosis
        'vanishing'
    """
    ratio = gradient_ratio(first, output)
    if not np.all(np.isfinite(losses)) or not ratio <= RATIO:
        diagnosis = "exploding"
    elif dead_share >= DEAD_SHARE:
        diagnosis = "dead"
    elif ratio < 1 / RATIO:
        diagnosis = "vanishing"
    else:
        diagnosis = "healthy"
    learned = bool(np.isfinite(test_accuracy) and test_accuracy >= chance + LEARN_MARGIN)
    return Verdict(diagnosis, learned, ratio, float(dead_share))


def chance_level(labels: np.ndarray) -> float:
    """Accuracy of always answering the larger class."""
    labels = np.asarray(labels)
    return float(max(np.mean(labels == 0), np.mean(labels == 1))) if len(labels) else 0.5


def verdict_tags(result, chance: float) -> dict[str, str]:
    """The MLflow tags of a trained run (records.RunResult): ``verdict``, ``learned`` and the numbers behind them."""
    if not result.history:
        return {}
    first = [r.stats["grad_mean_abs"][0] for r in result.history]
    output = [r.stats["grad_mean_abs"][-1] for r in result.history]
    losses = [r.train_loss for r in result.history]
    verdict = diagnose(first, output, losses, result.dead_share, result.history[-1].test_accuracy, chance)
    return {
        "verdict": verdict.diagnosis,
        "learned": "yes" if verdict.learned else "no",
        "gradient_ratio": f"{verdict.gradient_ratio:.4g}",
        "dead_share": f"{verdict.dead_share:.3f}",
        "chance": f"{chance:.4f}",
    }
