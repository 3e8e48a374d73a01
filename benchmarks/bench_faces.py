"""Face benchmark: each detector's detection rate and milliseconds per frame on the shared real clips, and how
consistently its crops place the eyes (measured by an independent eye detector), against the centre square.

    make bench-faces          # or: python benchmarks/bench_faces.py

Clips: the 6 real CREMA-D flv (480x360, actor 1001), the 4 RAVDESS originals (1280x720 H.264, actor 05) and the
120 pre-cropped RAVDESS face videos (224x224) of ../shared. 8 frames per clip at equal intervals, as training samples
them. The eye check runs OpenCV 4's Haar eye cascade on the 224-px crops (a detector none of the croppers uses):
the spread across clips of the eye midpoint and of the distance between the eyes, as a share of the crop side.
Also draws docs/faces.png, the contact sheet `prepare` writes, from the CREMA-D samples.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from cremad_lit.data.faces import crop_and_resize, find_face  # noqa: E402
from cremad_lit.data.media import read_frames  # noqa: E402
from cremad_lit.plots import draw_faces  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
SETS = {
    "CREMA-D flv 480x360 (6 clips)": sorted((SHARED / "cremad-samples" / "VideoFlash").glob("*.flv")),
    "RAVDESS mp4 1280x720 (4 clips)": sorted((SHARED / "ravdess-av-actor05" / "Actor_05").glob("*.mp4")),
    "RAVDESS face crops 224x224 (120 clips)": sorted(
        (SHARED / "ravdess-av-actor05" / "face-crops" / "Actor_05").glob("*.avi")
    ),
}
DETECTORS = ["lbp"] + (["haar"] if hasattr(cv2, "CascadeClassifier") else [])


def eye_positions(crops: np.ndarray):
    """Median (midpoint x, midpoint y, distance) of the eyes over a clip's crops, as shares of the side."""
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    found = []
    for crop in crops:
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        eyes = [
            e
            for e in detector.detectMultiScale(gray, 1.1, 5, minSize=(12, 12))
            if e[1] + e[3] / 2 < 0.6 * 224
        ]
        eyes = sorted(eyes, key=lambda e: -e[2] * e[3])[:2]
        if len(eyes) == 2:
            (x1, y1), (x2, y2) = [(x + w / 2, y + h / 2) for x, y, w, h in eyes]
            if abs(x1 - x2) > 0.15 * 224:
                found.append(((x1 + x2) / 448, (y1 + y2) / 448, np.hypot(x1 - x2, y1 - y2) / 224))
    return np.median(found, axis=0) if found else None


def main() -> None:
    frames = {name: [read_frames(str(p), 8) for p in paths] for name, paths in SETS.items() if paths}
    if len(frames) < len(SETS):
        raise SystemExit(f"shared clips missing under {SHARED}")
    detection = [
        "| clips | detector | frames with a face | rate | ms per frame | crops: face / whole / centre (fallback) |"
    ]
    detection.append("| --- | --- | ---: | ---: | ---: | --- |")
    placement = [
        "| crop | clips with both eyes found | eye midpoint x spread | y spread | eye distance (mean) | its spread |"
    ]
    placement.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    originals = frames["CREMA-D flv 480x360 (6 clips)"] + frames["RAVDESS mp4 1280x720 (4 clips)"]
    for method in DETECTORS:
        find_face(originals[0], method, 0.35)  # warm-up: the detector loads once
        for name, clips in frames.items():
            started, found, searched, kinds = time.perf_counter(), 0, 0, {"face": 0, "whole": 0, "centre": 0}
            for clip in clips:
                face = find_face(clip, method, 0.35)
                found, searched = found + face.found, searched + face.searched
                kinds[face.kind] += 1
            per_frame = 1000 * (time.perf_counter() - started) / searched
            detection.append(
                f"| {name} | {method} | {found} / {searched} | {found / searched:.1%} | {per_frame:.1f} | "
                f"{kinds['face']} / {kinds['whole']} / {kinds['centre']} |"
            )
    for method in ["none", *DETECTORS]:
        positions = [
            eye_positions(crop_and_resize(c, find_face(c, method, 0.35).box, 224)) for c in originals
        ]
        kept = np.array([p for p in positions if p is not None])
        if len(kept) < 2:
            placement.append(f"| {method} | {len(kept)} / {len(originals)} | - | - | - | - |")
            continue
        spread = kept.std(axis=0)
        placement.append(
            f"| {'centre square' if method == 'none' else method} | {len(kept)} / {len(originals)} | "
            f"{spread[0]:.1%} | {spread[1]:.1%} | {kept[:, 2].mean():.1%} | {spread[2]:.1%} |"
        )
    sheet = faces_sheet()
    body = "\n".join(
        [
            "## Face detection and crops (`make bench-faces`)",
            "",
            f"Machine: {machine()}, OpenCV {cv2.__version__}. 8 frames per clip, searched at most 320 px wide, faces of "
            "at least a fifth of the short side; one box per clip (the median detection, widened by face_margin=0.35).",
            "",
            *detection,
            "",
            "Where the crops put the eyes, measured by OpenCV's Haar eye cascade on the 224-px crops of the 10 original "
            "clips (two corpora, two people): the standard deviation across clips, as a share of the crop side "
            "(smaller: the face sits in the same place in every clip).",
            "",
            *placement,
            "",
            f"Contact sheet of the CREMA-D samples, as `prepare` writes it: `{sheet}`.",
        ]
    )
    print(body)
    print(f"wrote {write_section('faces', body)}")


def faces_sheet() -> str:
    """docs/faces.png: what `python -m cremad_lit prepare data.root=../shared/cremad-samples` writes as faces.png."""
    import tempfile

    from cremad_lit.data.datamodule import EmotionDataModule

    with tempfile.TemporaryDirectory() as cache:
        datamodule = EmotionDataModule(
            str(SHARED / "cremad-samples"),
            {"frames": 8, "image_size": 224, "face_crop": "lbp"},
            cache_dir=cache,
        )
        datamodule.cache.build(datamodule.catalog())
        path = draw_faces(datamodule, Path(__file__).resolve().parent.parent / "docs" / "faces.png")
    return str(path.relative_to(path.parent.parent))


if __name__ == "__main__":
    main()
