"""How sure a number is: 95% intervals by bootstrap over test speakers (not clips), and paired comparisons.

    python -m cremad_lit report DIR          # prints both for every configuration found under DIR

A clip split's clips are not independent: every clip of a person shares that person's voice and face. So the unit
that is resampled is the speaker. Every run's predictions.csv (with its `speaker` column) of one configuration are
pooled: over folds each speaker is tested once, and over seeds a speaker's repeated tests stay together. An interval
resamples the speakers with replacement and takes the pooled accuracy (WAR) each time. A paired comparison resamples
the speakers both configurations were tested on and takes the difference on the same draw, so the people the two have
in common cancel out of the spread.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESAMPLES = 2000
LEVEL = 0.95


def per_speaker(predictions: pd.DataFrame) -> pd.DataFrame:
    """speaker -> correct, clips (over every prediction of that speaker)."""
    correct = (predictions["label"] == predictions["pred"]).astype(int)
    return (
        pd.DataFrame({"speaker": predictions["speaker"].astype(str), "correct": correct})
        .groupby("speaker")["correct"]
        .agg(correct="sum", clips="count")
    )


def _draws(n_speakers: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_speakers, size=(RESAMPLES, n_speakers))


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def accuracy_interval(predictions: pd.DataFrame, seed: int = 0) -> dict:
    """Pooled accuracy and its 95% bootstrap interval over speakers."""
    table = per_speaker(predictions)
    correct, clips = table["correct"].to_numpy(), table["clips"].to_numpy()
    draws = _draws(len(table), seed)
    resampled = correct[draws].sum(axis=1) / clips[draws].sum(axis=1)
    low, high = _interval(resampled)
    return {"accuracy": float(correct.sum() / clips.sum()), "low": low, "high": high, "speakers": len(table)}


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, seed: int = 0) -> dict:
    """Accuracy of `a` minus `b` on the speakers both were tested on, with its 95% interval over those speakers."""
    first, second = per_speaker(a), per_speaker(b)
    shared = first.index.intersection(second.index)
    if not len(shared):
        raise ValueError("the two configurations share no test speaker")
    first, second = first.loc[shared], second.loc[shared]
    draws = _draws(len(shared), seed)

    def pooled(table: pd.DataFrame, rows) -> np.ndarray:
        return table["correct"].to_numpy()[rows].sum(axis=-1) / table["clips"].to_numpy()[rows].sum(axis=-1)

    everyone = np.arange(len(shared))
    low, high = _interval(pooled(first, draws) - pooled(second, draws))
    return {
        "difference": float(pooled(first, everyone) - pooled(second, everyone)),
        "low": low,
        "high": high,
        "speakers": len(shared),
    }
