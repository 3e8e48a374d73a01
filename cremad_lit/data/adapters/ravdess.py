"""RAVDESS: `Actor_01/03-01-05-01-02-01-01.wav` (or flat), audio-only speech, audio-video and video-only mp4.

    python -m cremad_lit eda data=ravdess data.root=../shared/ravdess-speech
    python train.py experiment=speech data=ravdess data.root=/path/to/RAVDESS

Name fields: modality (01 audio-video mp4, 02 video-only mp4, 03 audio-only wav), vocal channel (01 speech,
02 song), emotion (01 neutral 02 calm 03 happy 04 sad 05 angry 06 fearful 07 disgust 08 surprised), intensity
(01 normal, 02 strong), statement (01, 02), repetition, actor (odd male, even female). The files of one recording
(its wav and its mp4s) are one clip, `clip_id` = the name without its modality field (`01-05-01-02-01-01`), so the
`01-` and `02-` videos of a take (the same video with and without sound) can never land on both sides of a split.
Names may carry a suffix after the seven fields (`01-01-03-01-01-02-05_facecroppad.avi`, as face-cropping tools write
them) and videos may be .mp4, .avi, .mov or .mkv. A take gets one video: the `01-` one (it has sound) over the `02-`,
the original name over a suffixed one; the others are listed as not used.
`data.label_map` maps the eight emotions to the six shared ones (calm and surprised left out by default);
song is left out unless `data.options.vocal_channels=[speech,song]`. 48 kHz and stereo audio are resampled to 16 kHz mono.
"""

from __future__ import annotations

import re
from pathlib import Path

from cremad_lit.data.adapters.common import SAME_TAKE, Rejected, reject, walk_files
from cremad_lit.data.labels import emotion_code

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
INTENSITIES = {"01": "normal", "02": "strong"}
DEFAULT_LABEL_MAP = {"calm": None, "surprised": None}
_NAME = re.compile(r"^(0[123])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d{2})(?:[_.-].*)?$")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
_KIND = {".wav": ("03",), **{extension: ("01", "02") for extension in VIDEO_EXTENSIONS}}


def _video_rank(path: Path) -> tuple[int, int]:
    """Which video of a take to use (lower first): audio-video over video-only, the original over a suffixed copy."""
    return (
        0 if path.name.startswith("01-") else 1,
        0 if _NAME.match(path.stem).end(7) == len(path.stem) else 1,
    )


def scan(
    root, manifest=None, label_map=None, keep_unknown=False, vocal_channels=("speech",)
) -> tuple[list[dict], list[dict]]:
    if root is None or not Path(root).expanduser().is_dir():
        raise FileNotFoundError(
            f"RAVDESS root {root} does not exist or is not a folder (expected Actor_XX/03-01-05-01-02-01-12.wav "
            "and/or 01-/02-...mp4, or the files flat)"
        )
    if label_map is None:  # the six shared emotions by default; with data.classes=all|[...] all eight
        label_map = {} if keep_unknown else DEFAULT_LABEL_MAP
    rejected: list[dict] = []
    clips: dict[str, dict] = {}
    files = walk_files(Path(root).expanduser(), tuple(_KIND))
    for path in files:
        match = _NAME.match(path.stem)
        if match is None or match.group(1) not in _KIND[path.suffix.lower()]:
            reject(
                rejected,
                path,
                "name is not a RAVDESS name (MM-VV-EE-II-SS-RR-AA[_suffix], 03 for .wav, 01/02 for video)",
            )
            continue
        modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
        if VOCAL_CHANNELS[channel] not in vocal_channels:
            reject(
                rejected,
                path,
                f"vocal channel {VOCAL_CHANNELS[channel]} is left out (data.options.vocal_channels)",
                EMOTIONS[emotion],
            )
            continue
        try:
            code = emotion_code(EMOTIONS[emotion], label_map, keep_unknown)
        except Rejected as reason:
            reject(rejected, path, str(reason), EMOTIONS[emotion])
            continue
        clip_id = path.stem[3 : match.end(7)]
        row = clips.setdefault(
            clip_id,
            {
                "clip_id": clip_id,
                "video_path": "",
                "audio_path": "",
                "actor_id": int(actor),
                "statement": statement,
                "emotion": code,
                "intensity": INTENSITIES[intensity],
                "gender": "male" if int(actor) % 2 else "female",
            },
        )
        if modality == "03":
            if row["audio_path"]:
                reject(rejected, path, f"duplicate of {row['audio_path']}")
                continue
            row["audio_path"] = str(path)
        elif not row["video_path"]:
            row["video_path"] = str(path)
        else:
            kept, other = sorted([Path(row["video_path"]), path], key=_video_rank)
            row["video_path"] = str(kept)
            reject(rejected, other, f"{SAME_TAKE} {clip_id} (kept {kept.name})", EMOTIONS[emotion])
    if not clips and not rejected:
        raise FileNotFoundError(f"no RAVDESS files (.wav, .mp4) found under {root}")
    return list(clips.values()), rejected
