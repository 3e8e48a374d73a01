"""How big the prepared cache of the full CREMA-D is, and what shrinking it costs or saves when it is read.

    make bench-cache-size     # or: python benchmarks/bench_cache_size.py

The real CREMA-D clips in ../shared/cremad-samples are prepared (`ClipCache.build`, in this process) at the default
settings (8 frames at 224 px, the Mel image, the 16 kHz waveform) and at 112 px (what a backbone that reads 112 px
frames, e.g. the demo's, is given), each entry measured per array; the mean entry times 7,442 clips is the full
corpus's cache. Reading an entry back (`ClipCache.load`, median of 20 reads of each) is the decode cost of each setting.
`prepare` prints the same estimate from its first entry and stops before a disk that cannot hold it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from cremad_lit.data.cache import ClipCache  # noqa: E402
from cremad_lit.data.catalog import build_catalog  # noqa: E402
from cremad_lit.data.features import Preprocessing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared")) / "cremad-samples"
CREMAD_CLIPS = 7442
SETTINGS = {"default: 8 frames at 224 px": 224, "8 frames at 112 px": 112}


def main() -> None:
    clips = build_catalog(SAMPLES)
    clips = clips[clips["video_path"].astype(bool)]  # the full corpus has a video (with sound) for every clip
    rows, seconds = [], []
    for label, size in SETTINGS.items():
        with tempfile.TemporaryDirectory() as folder:
            cache = ClipCache(folder, Preprocessing(image_size=size))
            cache.build(clips, workers=0)
            entries = [cache.entry(c) for c in clips["clip_id"]]
            per_array = {}
            for clip_id in clips["clip_id"]:
                stored = cache.load(clip_id)
                seconds.append(len(stored["waveform"]) / 16000)
                for name, array in stored.items():
                    per_array.setdefault(name, []).append(array.nbytes)
            reads = []
            for clip_id in clips["clip_id"]:
                for _ in range(20):
                    started = time.perf_counter()
                    cache.load(clip_id)
                    reads.append(time.perf_counter() - started)
            mean = float(np.mean([e.stat().st_size for e in entries]))
            parts = ", ".join(
                f"{n} {np.mean(v) / 1024:.0f} KiB" for n, v in per_array.items() if np.mean(v) > 1024
            )
            rows.append(
                f"| {label} | {mean / 1024:.0f} KiB ({parts}) | {mean * CREMAD_CLIPS / 2**30:.2f} GiB | "
                f"{1000 * np.median(reads):.2f} ms |"
            )
    body = (
        "## The prepared cache's size (`make bench-cache-size`)\n\n"
        f"Machine: {machine()}. The {len(clips)} real CREMA-D clips of ../shared/cremad-samples prepared in one "
        f"process ({np.mean(seconds):.1f} s of sound on average); the full corpus is {CREMAD_CLIPS:,} clips, estimated "
        "at their mean size. Read: "
        "`ClipCache.load` of one entry, median of 20 reads of each (the page cache warm).\n\n"
        "| settings | per clip (its arrays) | full CREMA-D | read one entry |\n| --- | ---: | ---: | ---: |\n"
        + "\n".join(rows)
    )
    write_section("bench-cache-size", body)
    print(body)


if __name__ == "__main__":
    main()
