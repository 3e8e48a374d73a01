"""Catalog: scan a dataset root with its adapter and return one row per clip (names only, nothing is decoded).

    python -m cremad_lit.data.catalog /path/to/CREMA-D                      # prints a summary of the table
    python -m cremad_lit.data.catalog ../shared/ravdess-speech ravdess

Every adapter (`cremad_lit/data/adapters/`: cremad, ravdess, manifest) returns the same table (COLUMNS), so splits,
cache, DataModule, EDA, report, evaluate and predict work unchanged. `classes` (data.classes, see data/labels.py)
says which labels are classes; the ordered list is `table.attrs["classes"]`. An audio-only clip has `video_path == ""`.
Rows that cannot be used (a bad name, an unknown label, no speaker, a missing or empty file) are left out, warned
about and listed in `table.attrs["rejected"]` ({path, reason, label}), which the run's prepare_report.json records.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter

import pandas as pd

from cremad_lit.data.adapters import ADAPTERS, adapter
from cremad_lit.data.adapters.common import NOT_A_CLASS, ON_PURPOSE, SAME_TAKE, reject, walk_files
from cremad_lit.data.labels import EMOTION_ALIASES, Rejected, emotion_code, resolve_classes
from cremad_lit.errors import Stop

__all__ = [
    "COLUMNS",
    "DATASETS",
    "EMOTION_ALIASES",
    "ON_PURPOSE",
    "SAME_TAKE",
    "Rejected",
    "build_catalog",
    "unlabelled_speech",
    "emotion_code",
    "reject",
    "walk_files",
]
log = logging.getLogger(__name__)

DATASETS = tuple(ADAPTERS)
COLUMNS = [
    "clip_id",
    "video_path",
    "audio_path",
    "actor_id",
    "statement",
    "emotion",
    "intensity",
    "gender",
    "age",
    "race",
    "ethnicity",
]


class NoVideo(Stop, ValueError):
    """A model that reads faces given a corpus of sound files alone: the user's input, one line."""


def _summarise_on_purpose(rejected: list[dict]) -> None:
    for marker, what in ((ON_PURPOSE, "by data.label_map"), (NOT_A_CLASS, "as not in data.classes")):
        labels = Counter(r["label"] for r in rejected if marker in r["reason"])
        if labels:
            counts = ", ".join(f"{label} {n}" for label, n in sorted(labels.items(), key=str))
            log.info("left out %d clips %s (%s)", sum(labels.values()), what, counts)
    twins = sum(r["reason"].startswith(SAME_TAKE) for r in rejected)
    if twins:
        log.info(
            "one video per take: %d other videos of the same takes are not used (listed as rejected)", twins
        )


def build_catalog(
    root: str | os.PathLike | None,
    dataset: str = "cremad",
    modalities=None,
    label_map: dict | None = None,
    manifest: str | None = None,
    options: dict | None = None,
    classes="default",
) -> pd.DataFrame:
    """The clips table of `root` read by the `dataset` adapter, sorted by clip_id; rejections in `.attrs["rejected"]`.

    With `modalities`, clips lacking a file a modality needs are left out too (video needs a video file; audio needs
    a WAV or a video, whose own track is used), and asking for video from a root without any is one clear error.
    """
    scan = adapter(dataset)
    own_labels = classes not in (None, "default")  # the corpus's own label set, not only the six
    rows, rejected = scan(
        root=root, manifest=manifest, label_map=label_map, keep_unknown=own_labels, **(options or {})
    )
    table = pd.DataFrame(rows, columns=COLUMNS)
    resolved = resolve_classes(table["emotion"], classes)
    if own_labels and classes != "all":
        for row in table[~table["emotion"].isin(resolved)].itertuples():
            reject(
                rejected,
                row.audio_path or row.video_path,
                f"emotion {row.emotion} is {NOT_A_CLASS}",
                row.emotion,
            )
        table = table[table["emotion"].isin(resolved)]
    _summarise_on_purpose(rejected)
    if modalities is not None and "video" in modalities and len(table):
        if not (table["video_path"] != "").any():
            where = manifest or root
            raise NoVideo(
                f"data.modalities={list(modalities)} asks for video, but {where} holds no video files "
                "(only audio): give the clips' videos, or use a model of data.modalities=[audio]"
            )
        for path in table.loc[table["video_path"] == "", "audio_path"]:
            reject(rejected, path, "no video file for this clip (data.modalities includes video)")
        table = table[table["video_path"] != ""]
    if not len(table):
        raise FileNotFoundError(f"no usable clip found under {manifest or root} ({len(rejected)} left out)")
    table = table.sort_values("clip_id", ignore_index=True)
    table.attrs["rejected"] = rejected
    table.attrs["classes"] = resolved
    return table


def unlabelled_speech(
    root, dataset: str = "cremad", manifest: str | None = None, options: dict | None = None, rejected=()
) -> pd.DataFrame:
    """The clips `build_catalog` left out only for their label (`rejected`: by data.label_map or data.classes, such
    as RAVDESS's calm and surprised by default), as catalog rows: still their speakers' speech, which the speaker
    statistics read (data.speaker_stats=all_speech). Their labels are never used."""
    paths = {r["path"] for r in rejected if ON_PURPOSE in r["reason"] or NOT_A_CLASS in r["reason"]}
    if not paths:
        return pd.DataFrame(columns=COLUMNS)
    previous = log.level  # the corpus was read once already: its problems have been warned about
    log.setLevel(logging.ERROR)
    try:
        rows, _ = adapter(dataset)(
            root=root, manifest=manifest, label_map={}, keep_unknown=True, **(options or {})
        )
    finally:
        log.setLevel(previous)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table[table["audio_path"].isin(paths) | table["video_path"].isin(paths)]
    return table.sort_values("clip_id", ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        raise SystemExit(f"usage: python -m cremad_lit.data.catalog DATASET_ROOT [{'|'.join(DATASETS)}]")
    dataset = argv[1] if len(argv) == 2 else "cremad"
    table = (
        build_catalog(None, dataset, manifest=argv[0])
        if dataset == "manifest"
        else build_catalog(argv[0], dataset)
    )
    print(
        f"{len(table)} clips, {table['actor_id'].nunique()} actors, {len(table.attrs['rejected'])} left out"
    )
    print(table["emotion"].value_counts().sort_index().to_string())


if __name__ == "__main__":
    main()
