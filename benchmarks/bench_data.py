"""Data benchmark: clips/s for on-the-fly decoding (decord vs PyAV) and for loading the prepared cache.

    make bench-data          # or: python benchmarks/bench_data.py [--clips 48]

Runs on generated clips in the real CREMA-D format (FLV1 480x360 at 29.97 fps, MP3 audio, 2-3 s) and on the real
sample clips in ../shared/cremad-samples, with the paper's settings (8 frames, 224 px, 64x128 Mel). Single process
("per worker"); a DataLoader with N workers scales roughly N-fold until the disk or the cores run out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from cremad_lit.data.cache import ClipCache  # noqa: E402
from cremad_lit.data.catalog import build_catalog  # noqa: E402
from cremad_lit.data.dataset import ClipDataset  # noqa: E402
from cremad_lit.data.features import Preprocessing  # noqa: E402
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.data.synthetic import generate  # noqa: E402

SHARED_SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "cremad-samples"


def clips_per_second(dataset: ClipDataset, repeats: int = 1) -> float:
    dataset[0]  # warm-up: imports, the Mel transform, the Haar cascade
    started = time.perf_counter()
    for _ in range(repeats):
        for index in range(len(dataset)):
            sample = dataset[index]
            assert "error" not in sample, sample
    return repeats * len(dataset) / (time.perf_counter() - started)


def measure(root: Path, work: Path, prep: Preprocessing, label: str) -> list[tuple[str, str, float]]:
    clips = build_catalog(root)
    args = (prep, ("audio", "video"), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    rows = []
    for decoder in ("decord", "pyav"):
        rows.append(
            (
                label,
                f"on the fly, {decoder}",
                clips_per_second(ClipDataset(clips, *args, classes=EMOTIONS, cache=None, decoder=decoder)),
            )
        )
    cache = ClipCache(work / "cache", prep)
    cache.build(clips, workers=0)
    rows.append(
        (
            label,
            "prepared cache",
            clips_per_second(ClipDataset(clips, *args, classes=EMOTIONS, cache=cache), repeats=3),
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--clips", type=int, default=48, help="generated clips (multiples of 22 per actor with 2 statements)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="cremad-bench-"))
    try:
        actors = max(1, args.clips // 16)
        generated = generate(work / "generated", actors=actors, sentences=1, seed=0)
        rows = []
        for face_crop in ("none", "haar"):
            prep = Preprocessing(frames=8, image_size=224, face_crop=face_crop)
            rows += measure(
                generated,
                work / f"g-{face_crop}",
                prep,
                f"generated ({16 * actors} clips), face_crop={face_crop}",
            )
            if SHARED_SAMPLES.is_dir():
                samples = work / "samples"
                if not samples.exists():
                    shutil.copytree(SHARED_SAMPLES, samples)
                rows += measure(
                    samples,
                    work / f"s-{face_crop}",
                    prep,
                    f"real CREMA-D flv (6 clips), face_crop={face_crop}",
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "## Data loading (`make bench-data`)",
        "",
        f"Machine: {machine()}. One process, torch threads 1; 8 frames at 224 px + 64x128 Mel per clip.",
        "",
        "| clips | path | clips/s | x on-the-fly decord |",
        "| --- | --- | ---: | ---: |",
    ]
    for label in dict.fromkeys(r[0] for r in rows):
        group = [r for r in rows if r[0] == label]
        base = next(r[2] for r in group if "decord" in r[1])
        lines += [f"| {label} | {path} | {rate:.1f} | {rate / base:.1f}x |" for _, path, rate in group]
    body = "\n".join(lines)
    print(body)
    print(f"\nwritten to {write_section('bench-data', body)}")


if __name__ == "__main__":
    main()
