"""Emotion labels: the names corpora use, their codes, and the ordered class list a run trains on (`data.classes`).

    from cremad_lit.data.labels import emotion_code, resolve_classes
    emotion_code("fearful")                                  # "FEA"
    emotion_code("calm", keep_unknown=True)                  # "CAL" (beyond the six)
    resolve_classes(["NEU", "CAL", "ANG"], "all")            # ("ANG", "NEU", "CAL"): the six's order first

`data.classes`: `default` (the six CREMA-D codes, what every run before 0.4 trained), `all` (every label the corpus
has: RAVDESS's eight, a manifest's own), or a list of names that picks and orders them. Checkpoints store the list.
"""

from __future__ import annotations

import pandas as pd

# The six CREMA-D codes in their order: data.classes=default, and every checkpoint from before 0.4 (index i = EMOTIONS[i]).
EMOTIONS: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
EMOTION_NAMES: dict[str, str] = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
# Emotions some corpora have beyond the six, with a code each (RAVDESS calm and surprised, EmoDB boredom, ...).
EXTRA_EMOTIONS = {"CAL": "calm", "SUR": "surprised", "BOR": "boredom", "CON": "contempt"}
# Names people give the emotions, besides the codes themselves (case-insensitive).
EMOTION_ALIASES = {
    **{code.lower(): code for code in (*EMOTIONS, *EXTRA_EMOTIONS)},
    **{name: code for code, name in EMOTION_NAMES.items()},
    **{name: code for code, name in EXTRA_EMOTIONS.items()},
    "angry": "ANG",
    "disgusted": "DIS",
    "fearful": "FEA",
    "scared": "FEA",
    "happiness": "HAP",
    "joy": "HAP",
    "sadness": "SAD",
    "surprise": "SUR",
    "bored": "BOR",
}
CLASS_SETS = ("default", "all")


class Rejected(ValueError):
    """A row that cannot be used; the message is the reason."""


def emotion_code(label, label_map: dict | None = None, keep_unknown: bool = False) -> str:
    """The code of a label (a code or a common name, any case); `label_map` first maps any other label.

    A label mapped to null in `label_map` is left out on purpose (RAVDESS's calm and surprised by default). Without
    `keep_unknown` a label must be one of the six; with it (data.classes other than default) the codes beyond the six
    and, for any other label, the label itself as written are classes too.
    """
    text = "" if label is None or (isinstance(label, float) and pd.isna(label)) else str(label).strip()
    mapping = {str(k).strip().lower(): v for k, v in (label_map or {}).items()}
    if text.lower() in mapping:
        target = mapping[text.lower()]
        if target is None:
            raise Rejected(f"emotion {text!r} is left out by data.label_map")
        text = str(target).strip()
    code = EMOTION_ALIASES.get(text.lower())
    if keep_unknown:
        if not text:
            raise Rejected("row has no emotion label")
        return code or text
    if code not in EMOTIONS:
        raise Rejected(
            f"unknown emotion {text!r}: use one of {', '.join(EMOTIONS)} or a common name, map it with "
            "data.label_map, or train on the corpus's own labels with data.classes=all"
        )
    return code


def resolve_classes(labels, classes="default") -> tuple[str, ...]:
    """The ordered class list for a corpus whose clips carry `labels` (codes from emotion_code)."""
    if classes in (None, "default"):
        return EMOTIONS
    if classes == "all":
        present = set(labels)
        known = [c for c in (*EMOTIONS, *EXTRA_EMOTIONS) if c in present]
        return tuple(known + sorted(present - set(known)))
    if isinstance(classes, str):
        raise ValueError(
            f"data.classes must be one of {CLASS_SETS} or a list of emotion names, not {classes!r}"
        )
    picked = tuple(emotion_code(name, keep_unknown=True) for name in classes)
    if len(set(picked)) != len(picked) or len(picked) < 2:
        raise ValueError(f"data.classes={list(classes)} must name at least two different emotions ({picked})")
    return picked


def shared_classes(model_classes, data_classes) -> list[str]:
    """The classes a model and a corpus have in common, in the model's order (cross-corpus evaluation)."""
    return [c for c in model_classes if c in set(data_classes)]
