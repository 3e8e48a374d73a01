"""Face benchmark: each detector's detection rate and milliseconds per frame on the shared real clips, and how
consistently its crops place the eyes (measured by an independent eye detector), against the centre square.

    make bench-faces          # or: python benchmarks/bench_faces.py

Clips: the 6 real CREMA-D flv (480x360, actor 1001), the 4 RAVDESS originals (1280x720 H.264, actor 05) and the
120 pre-cropped RAVDESS face videos (224x224) of ../shared. 8 frames per clip at equal intervals, as training samples
them. `mtcnn` aligns (eyes level at the template's places) instead of cropping a box. The eye check runs OpenCV 4's Haar eye cascade on the 224-px crops (a detector none of the croppers uses):
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

from cremad_lit.data.faces import crop, find_face  # noqa: E402
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
DETECTORS = ["lbp", "mtcnn"] + (["haar"] if hasattr(cv2, "CascadeClassifier") else [])


def eye_positions(crops: np.ndarray):
    """Median (midpoint x, midpoint y, distance) of the eyes over a clip's crops, as shares of the side."""
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    found = []
    for image in crops:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
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
        positions = [eye_positions(crop(c, find_face(c, method, 0.35), 224)) for c in originals]
        kept = np.array([p for p in positions if p is not None])
        if len(kept) < 2:
            placement.append(f"| {method} | {len(kept)} / {len(originals)} | - | - | - | - |")
            continue
        spread = kept.std(axis=0)
        placement.append(
            f"| {'centre square' if method == 'none' else method} | {len(kept)} / {len(originals)} | "
            f"{spread[0]:.1%} | {spread[1]:.1%} | {kept[:, 2].mean():.1%} | {spread[2]:.1%} |"
        )
    expressions = expression_table(frames)
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
            "The FER2013 expression model zero-shot on each crop (`baseline method=fer_zero_shot`'s computation: the mean "
            "of its probabilities over the 8 frames, its classes mapped onto the clip's by name; RAVDESS's calm has no "
            "FER class and is never predicted). One or two people: this measures the pipeline, not how well it "
            "generalises to faces. Recall per emotion in the order of the columns' codes.",
            "",
            *expressions,
            "",
            f"Contact sheet of the CREMA-D samples, as `prepare` writes it: `{sheet}`.",
        ]
    )
    print(body)
    print(f"wrote {write_section('faces', body)}")


def emotion_of(path: Path) -> str:
    """The clip's emotion code from its name (CREMA-D 1001_DFA_ANG_XX, RAVDESS 01-01-05-...)."""
    from cremad_lit.data.adapters.ravdess import EMOTIONS as RAVDESS_EMOTIONS
    from cremad_lit.data.labels import emotion_code

    if "_" in path.stem and path.stem[:4].isdigit():
        return path.stem.split("_")[2]
    return emotion_code(RAVDESS_EMOTIONS[path.stem.split("-")[2]], keep_unknown=True)


def expression_table(frames: dict) -> list[str]:
    """Zero-shot accuracy, UAR and per-emotion recall of the expression model with each crop, per set of clips."""
    from cremad_lit.data.labels import EMOTIONS, EXTRA_EMOTIONS
    from cremad_lit.face_expressions import class_mapping, clip_expressions, mapped_probabilities
    from cremad_lit.models.fer_minixception import load_minixception

    net = load_minixception()
    rows = ["| clips | crop | accuracy | UAR | recall per emotion |", "| --- | --- | ---: | ---: | --- |"]
    for name, clips in frames.items():
        paths = SETS[name]
        if "face crops" in name:  # a take's 01- and 02- crops are one recording (the catalog keeps the 01-)
            keep = [i for i, p in enumerate(paths) if p.name.startswith("01-")]
            paths, clips = [paths[i] for i in keep], [clips[i] for i in keep]
            name = name.replace("120 clips", f"{len(paths)} takes")
        labels = [emotion_of(p) for p in paths]
        classes = [c for c in (*EMOTIONS, *EXTRA_EMOTIONS) if c in set(labels)]
        mapping = class_mapping(classes)
        for method in ["none", *DETECTORS]:
            probs = np.stack([clip_expressions(c, method, 0.35, net) for c in clips])
            predicted = [classes[i] for i in mapped_probabilities(probs, mapping).argmax(axis=1)]
            hits = np.array([p == t for p, t in zip(predicted, labels, strict=True)])
            recall = {c: hits[[t == c for t in labels]].mean() for c in classes}
            rows.append(
                f"| {name} | {'centre square' if method == 'none' else method} | {hits.mean():.3f} | "
                f"{np.mean(list(recall.values())):.3f} | "
                + " ".join(f"{c} {v:.2f}" for c, v in recall.items())
                + " |"
            )
    return rows


def faces_sheet() -> str:
    """docs/faces.png: what `python -m cremad_lit prepare data.root=../shared/cremad-samples` writes as faces.png."""
    import tempfile

    from cremad_lit.data.datamodule import EmotionDataModule

    with tempfile.TemporaryDirectory() as cache:
        datamodule = EmotionDataModule.from_config(
            dict(
                root=str(SHARED / "cremad-samples"),
                preprocessing={"frames": 8, "image_size": 224, "face_crop": "mtcnn"},
                cache_dir=cache,
            )
        )
        datamodule.cache.build(datamodule.catalog())
        path = draw_faces(datamodule, Path(__file__).resolve().parent.parent / "docs" / "faces.png")
    return str(path.relative_to(path.parent.parent))


if __name__ == "__main__":
    main()
