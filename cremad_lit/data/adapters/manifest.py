"""Any corpus through a CSV manifest: `data=manifest data.manifest=PATH.csv`.

    python train.py experiment=speech data=manifest data.manifest=/data/mycorpus/clips.csv
    python evaluate.py ckpt_path=... data=manifest data.manifest=other.csv subset=all

Columns: `audio_path` and/or `video_path` (relative to the CSV's folder, or absolute), `speaker`, `emotion` (the six
codes or common names, any case; `data.label_map` maps any other), optional `gender` (male/female/m/f), optional
`clip_id` (default: the file's stem). Splits are by speaker. A row with a missing or empty file, an unknown label,
no speaker or a duplicate clip_id is left out with its reason; the good rows go on.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cremad_lit.data.adapters.common import Rejected, reject
from cremad_lit.data.labels import emotion_code

PATH_COLUMNS = ("audio_path", "video_path")
_GENDERS = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()


def _speaker_ids(values: pd.Series):
    """Integer speaker ids when every one is a whole number (so they sort as numbers), else strings."""
    texts = values.map(_text)
    numeric = texts[texts != ""].str.fullmatch(r"\d+").all()
    return texts.map(lambda t: int(t) if t and numeric else t)


def scan(root=None, manifest=None, label_map=None, keep_unknown=False) -> tuple[list[dict], list[dict]]:
    if not manifest:
        raise ValueError("data=manifest needs data.manifest=PATH.csv")
    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    present = [c for c in PATH_COLUMNS if c in table.columns]
    missing = [c for c in ("speaker", "emotion") if c not in table.columns]
    if not present or missing:
        raise ValueError(
            f"manifest {manifest} needs columns audio_path and/or video_path, speaker and emotion "
            f"(optional gender, clip_id); it has {list(table.columns)}"
        )
    table["speaker"] = _speaker_ids(table["speaker"])
    rows, rejected, seen = [], [], set()
    for line, record in enumerate(table.to_dict("records"), start=2):
        paths = {c: _text(record.get(c)) for c in PATH_COLUMNS}
        paths = {c: str((manifest.parent / p).resolve()) if p else "" for c, p in paths.items()}
        where = paths["audio_path"] or paths["video_path"] or f"{manifest}:{line}"
        try:
            if not any(paths.values()):
                raise Rejected("row has no audio_path or video_path")
            for column, path in paths.items():
                if path and not Path(path).is_file():
                    raise Rejected(f"{column} file does not exist")
                if path and Path(path).stat().st_size == 0:
                    raise Rejected(f"{column} file is empty (0 bytes)")
            if record["speaker"] == "":
                raise Rejected("row has no speaker")
            code = emotion_code(record["emotion"], label_map, keep_unknown)
        except Rejected as reason:
            reject(rejected, where, f"{reason} (manifest line {line})", _text(record.get("emotion")) or None)
            continue
        clip_id = _text(record.get("clip_id")) or Path(where).stem
        if clip_id in seen:
            reject(rejected, where, f"duplicate clip_id {clip_id!r} (manifest line {line})")
            continue
        seen.add(clip_id)
        rows.append(
            {
                "clip_id": clip_id,
                **paths,
                "actor_id": record["speaker"],
                "emotion": code,
                "gender": _GENDERS.get(_text(record.get("gender")).lower(), "unknown"),
            }
        )
    return rows, rejected
