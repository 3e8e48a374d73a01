"""Catalog: scan a dataset root with its adapter and return one row per clip (names only, nothing is decoded).

    python -m cremad_lit.data.catalog /path/to/CREMA-D                      # prints a summary of the table
    python -m cremad_lit.data.catalog ../shared/ravdess-speech ravdess

Every adapter (`cremad_lit/data/adapters/`: cremad, ravdess, manifest) returns the same table (COLUMNS), so splits,
cache, DataModule, EDA, report, evaluate and predict work unchanged. An audio-only clip has `video_path == ""`.
Rows that cannot be used (a bad name, an unknown label, no speaker, a missing or empty file) are left out, warned
about and listed in `table.attrs["rejected"]` ({path, reason, label}), which the run's prepare_report.json records.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from cremad_lit import EMOTION_NAMES, EMOTIONS

log = logging.getLogger(__name__)

DATASETS = ("cremad", "ravdess", "manifest")
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
# Names people give the six emotions, besides the codes themselves (case-insensitive).
EMOTION_ALIASES = {
    **{code.lower(): code for code in EMOTIONS},
    **{name: code for code, name in EMOTION_NAMES.items()},
    "angry": "ANG",
    "disgusted": "DIS",
    "fearful": "FEA",
    "scared": "FEA",
    "happiness": "HAP",
    "joy": "HAP",
    "sadness": "SAD",
}


class Rejected(ValueError):
    """A row that cannot be used; the message is the reason."""


def emotion_code(label, label_map: dict | None = None) -> str:
    """One of EMOTIONS for a label (a code or a common name, any case); `label_map` first maps any other label.

    A label mapped to null in `label_map` is left out on purpose (RAVDESS's calm and surprised by default).
    """
    text = "" if label is None or (isinstance(label, float) and pd.isna(label)) else str(label).strip()
    mapping = {str(k).strip().lower(): v for k, v in (label_map or {}).items()}
    if text.lower() in mapping:
        target = mapping[text.lower()]
        if target is None:
            raise Rejected(f"emotion {text!r} is left out by data.label_map")
        text = str(target)
    code = EMOTION_ALIASES.get(text.lower())
    if code is None:
        raise Rejected(
            f"unknown emotion {text!r}: use one of {', '.join(EMOTIONS)} or a common name, or map it with data.label_map"
        )
    return code


def walk_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under `root` (any depth, sorted) whose extension is in `extensions`."""
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=True):  # datasets are often symlinked in
        subdirs.sort()
        found += [Path(directory, n) for n in sorted(files) if os.path.splitext(n)[1].lower() in extensions]
    return found


ON_PURPOSE = "left out by data.label_map"
SAME_TAKE = (
    "another file of take"  # a second video of one recording (RAVDESS's 01-/02- twins, a face-cropped copy)
)


def reject(rejected: list[dict], path, reason: str, label: str | None = None) -> None:
    """Record a file that is not used; a problem is warned about file by file, a choice (label map, one video per
    take) once in total."""
    if ON_PURPOSE not in reason and not reason.startswith(SAME_TAKE):
        log.warning("leaving out %s: %s", path, reason)
    rejected.append({"path": str(path), "reason": reason, "label": label})


def _summarise_on_purpose(rejected: list[dict]) -> None:
    labels = Counter(r["label"] for r in rejected if ON_PURPOSE in r["reason"])
    if labels:
        counts = ", ".join(f"{label} {n}" for label, n in sorted(labels.items(), key=str))
        log.info("left out %d clips by data.label_map (%s)", sum(labels.values()), counts)
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
) -> pd.DataFrame:
    """The clips table of `root` read by the `dataset` adapter, sorted by clip_id; rejections in `.attrs["rejected"]`.

    With `modalities`, clips lacking a file a modality needs are left out too (video needs a video file; audio needs
    a WAV or a video, whose own track is used), and asking for video from a root without any is one clear error.
    """
    from cremad_lit.data.adapters import ADAPTERS

    if dataset not in ADAPTERS:
        raise ValueError(f"data.dataset must be one of {sorted(ADAPTERS)}, not {dataset!r}")
    rows, rejected = ADAPTERS[dataset](root=root, manifest=manifest, label_map=label_map, **(options or {}))
    _summarise_on_purpose(rejected)
    table = pd.DataFrame(rows, columns=COLUMNS)
    if modalities is not None and "video" in modalities and len(table):
        if not (table["video_path"] != "").any():
            where = manifest or root
            raise ValueError(
                f"data.modalities={list(modalities)} asks for video, but {where} holds no video files "
                "(only audio): use data.modalities=[audio]"
            )
        for path in table.loc[table["video_path"] == "", "audio_path"]:
            reject(rejected, path, "no video file for this clip (data.modalities includes video)")
        table = table[table["video_path"] != ""]
    if not len(table):
        raise FileNotFoundError(f"no usable clip found under {manifest or root} ({len(rejected)} left out)")
    table = table.sort_values("clip_id", ignore_index=True)
    table.attrs["rejected"] = rejected
    return table


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
