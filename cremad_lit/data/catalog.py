"""Catalog: scan a CREMA-D root and return one row per clip (names only, nothing is decoded).

    python -m cremad_lit.data.catalog /path/to/CREMA-D        # prints a summary of the table

Understands the official layout (`VideoFlash/*.flv`, `AudioWAV/*.wav`, `VideoDemographics.csv`), the Kaggle mp4
copy whose names end in a gender code (`1001_DFA_ANG_XX_01.mp4`: 01 male, 02 female), and any nesting. The
`clip_id` is always the canonical stem `1001_DFA_ANG_XX`, so it matches the WAV names and the crowd-vote table.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from importlib import resources
from pathlib import Path

import pandas as pd

from cremad_lit import EMOTIONS, INTENSITIES, STATEMENTS

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".flv", ".mp4", ".avi", ".mkv")
AUDIO_EXTENSIONS = (".wav",)
DEMOGRAPHICS_FILE = "VideoDemographics.csv"
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
EXPECTED_LAYOUT = (
    "expected CREMA-D media under it: the official layout (VideoFlash/*.flv, AudioWAV/*.wav, "
    "VideoDemographics.csv) or the Kaggle mp4 copy (1001_DFA_ANG_XX_01.mp4), at any depth, with video "
    f"extensions {', '.join(VIDEO_EXTENSIONS)}. For the built-in generated dataset use data=synthetic "
    "(or `python -m cremad_lit.data.synthetic --out DIR`)."
)

_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<statement>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<intensity>[A-Z]{2})(?:_(?P<gender>\d{2}))?$"
)
_GENDER_CODES = {"01": "male", "02": "female"}


class BadName(ValueError):
    """A file name that is not a CREMA-D clip name."""


def parse_name(stem: str) -> dict:
    """Split `1001_DFA_ANG_XX` (or `..._01`) into its fields, or raise BadName saying why."""
    match = _NAME.match(stem)
    if match is None:
        raise BadName("name is not ActorID_Statement_Emotion_Intensity[_Gender]")
    fields = match.groupdict()
    if fields["statement"] not in STATEMENTS:
        raise BadName(f"unknown statement code {fields['statement']!r}")
    if fields["emotion"] not in EMOTIONS:
        raise BadName(f"unknown emotion code {fields['emotion']!r}")
    if fields["intensity"] not in INTENSITIES:
        raise BadName(f"unknown intensity code {fields['intensity']!r}")
    if fields["gender"] is not None and fields["gender"] not in _GENDER_CODES:
        raise BadName(f"unknown gender code {fields['gender']!r} (01 male, 02 female)")
    return {
        "clip_id": f"{fields['actor']}_{fields['statement']}_{fields['emotion']}_{fields['intensity']}",
        "actor_id": int(fields["actor"]),
        "statement": fields["statement"],
        "emotion": fields["emotion"],
        "intensity": fields["intensity"],
        "gender": _GENDER_CODES.get(fields["gender"]),
    }


def load_demographics(root: Path | None = None) -> pd.DataFrame:
    """Actor table from `root/VideoDemographics.csv` if present, else the bundled copy (ODbL, see NOTICE.md)."""
    local = root / DEMOGRAPHICS_FILE if root is not None else None
    if local is not None and local.is_file():
        table = pd.read_csv(local)
    else:
        with resources.files("cremad_lit.resources").joinpath(DEMOGRAPHICS_FILE).open() as handle:
            table = pd.read_csv(handle)
    table = table.rename(
        columns={"ActorID": "actor_id", "Age": "age", "Sex": "sex", "Race": "race", "Ethnicity": "ethnicity"}
    )
    table["gender"] = table["sex"].str.lower()
    return table[["actor_id", "gender", "age", "race", "ethnicity"]].set_index("actor_id")


def _scan(root: Path) -> tuple[list[Path], dict[str, Path]]:
    videos: list[Path] = []
    wavs: dict[str, Path] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            suffix = os.path.splitext(name)[1].lower()
            if suffix in VIDEO_EXTENSIONS:
                videos.append(Path(directory, name))
            elif suffix in AUDIO_EXTENSIONS:
                wavs.setdefault(os.path.splitext(name)[0], Path(directory, name))
    return videos, wavs


def build_catalog(root: str | os.PathLike) -> pd.DataFrame:
    """Return the clips table of `root` (columns COLUMNS), sorted by clip_id. Bad names are warned about and left out."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder; {EXPECTED_LAYOUT}")
    videos, wavs = _scan(root)
    if not videos:
        raise FileNotFoundError(f"no video files found under {root}; {EXPECTED_LAYOUT}")

    rows: dict[str, dict] = {}
    for path in videos:
        try:
            row = parse_name(path.stem)
        except BadName as reason:
            log.warning("skipping %s: %s", path, reason)
            continue
        if row["clip_id"] in rows:
            log.warning(
                "skipping %s: duplicate of clip %s already found at %s",
                path,
                row["clip_id"],
                rows[row["clip_id"]]["video_path"],
            )
            continue
        wav = wavs.get(row["clip_id"])
        row["video_path"] = str(path)
        row["audio_path"] = str(wav) if wav is not None else ""
        rows[row["clip_id"]] = row
    if not rows:
        raise FileNotFoundError(f"no file under {root} has a CREMA-D clip name; {EXPECTED_LAYOUT}")

    table = pd.DataFrame(list(rows.values()))
    demographics = load_demographics(root)
    known = table["actor_id"].map(demographics["gender"])
    table["gender"] = table["gender"].fillna(known)
    for column in ("age", "race", "ethnicity"):
        table[column] = table["actor_id"].map(demographics[column])
    missing = sorted(table.loc[table["gender"].isna(), "actor_id"].unique())
    if missing:
        log.warning("no gender known for actors %s (not in the name nor in %s)", missing, DEMOGRAPHICS_FILE)
        table["gender"] = table["gender"].fillna("unknown")
    return table[COLUMNS].sort_values("clip_id", ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m cremad_lit.data.catalog DATASET_ROOT")
    table = build_catalog(argv[0])
    print(f"{len(table)} clips, {table['actor_id'].nunique()} actors")
    print(table["emotion"].value_counts().sort_index().to_string())


if __name__ == "__main__":
    main()
