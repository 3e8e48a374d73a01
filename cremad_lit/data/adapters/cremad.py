"""CREMA-D: the official layout, the Kaggle mp4 copy, or its audio alone, at any nesting.

    python -m cremad_lit.data.catalog /path/to/CREMA-D          # data.dataset=cremad (the default)

Official: `VideoFlash/*.flv`, `AudioWAV/*.wav`, `VideoDemographics.csv`. Kaggle: `1001_DFA_ANG_XX_01.mp4` (the last
code is the gender: 01 male, 02 female). Audio only: `AudioWAV/` or a flat copy such as `Crema/1001_DFA_ANG_XX.wav`.
The `clip_id` is always the canonical stem `1001_DFA_ANG_XX`, so videos, WAVs and the crowd-vote table match. Gender
comes from the name's code, else the root's VideoDemographics.csv, else the bundled 91-actor table.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path

import pandas as pd

from cremad_lit.data.adapters.common import reject, walk_files
from cremad_lit.data.labels import EMOTIONS

log = logging.getLogger(__name__)

INTENSITIES: tuple[str, ...] = ("LO", "MD", "HI", "XX")
STATEMENTS: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}

VIDEO_EXTENSIONS = (".flv", ".mp4", ".avi", ".mkv")
AUDIO_EXTENSIONS = (".wav",)
DEMOGRAPHICS_FILE = "VideoDemographics.csv"
EXPECTED_LAYOUT = (
    "expected CREMA-D media under it: the official layout (VideoFlash/*.flv, AudioWAV/*.wav, "
    "VideoDemographics.csv), the Kaggle mp4 copy (1001_DFA_ANG_XX_01.mp4) or only the WAVs, at any depth, with video "
    f"extensions {', '.join(VIDEO_EXTENSIONS)}. For the built-in generated dataset use data=synthetic "
    "(or `python -m cremad_lit.data.synthetic --out DIR`); for other corpora data=ravdess or data=manifest."
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


def _parse_all(paths: list[Path], kind: str, rejected: list[dict]) -> dict[str, dict]:
    """clip_id -> fields (+ path) for each well-named file; bad names and duplicates are rejected."""
    found: dict[str, dict] = {}
    for path in paths:
        try:
            fields = parse_name(path.stem)
        except BadName as reason:
            reject(rejected, path, str(reason))
            continue
        if fields["clip_id"] in found:
            reject(
                rejected,
                path,
                f"duplicate of clip {fields['clip_id']} already found at {found[fields['clip_id']][kind]}",
            )
            continue
        found[fields["clip_id"]] = {**fields, kind: str(path)}
    return found


def scan(root, manifest=None, label_map=None, keep_unknown=False) -> tuple[list[dict], list[dict]]:
    """CREMA-D's names hold its six codes: `label_map` and `keep_unknown` change nothing here."""
    if root is None or not Path(root).expanduser().is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder; {EXPECTED_LAYOUT}")
    root = Path(root).expanduser()
    rejected: list[dict] = []
    videos = _parse_all(walk_files(root, VIDEO_EXTENSIONS), "video_path", rejected)
    wavs = _parse_all(walk_files(root, AUDIO_EXTENSIONS), "audio_path", rejected)
    if not videos and not wavs:
        raise FileNotFoundError(f"no CREMA-D media (videos or WAVs) found under {root}; {EXPECTED_LAYOUT}")
    demographics = load_demographics(root)
    rows, missing_gender = [], set()
    for clip_id in sorted(set(videos) | set(wavs)):
        fields = videos.get(clip_id) or wavs[clip_id]
        actor = fields["actor_id"]
        known = demographics.loc[actor] if actor in demographics.index else None
        gender = fields["gender"] or (known["gender"] if known is not None else None)
        if gender is None:
            missing_gender.add(actor)
        rows.append(
            {
                **{k: fields[k] for k in ("clip_id", "actor_id", "statement", "emotion", "intensity")},
                "video_path": videos.get(clip_id, {}).get("video_path", ""),
                "audio_path": wavs.get(clip_id, {}).get("audio_path", ""),
                "gender": gender or "unknown",
                **{c: (known[c] if known is not None else None) for c in ("age", "race", "ethnicity")},
            }
        )
    if missing_gender:
        log.warning(
            "no gender known for actors %s (not in the name nor in %s)",
            sorted(missing_gender),
            DEMOGRAPHICS_FILE,
        )
    return rows, rejected
