"""What the GE2E speaker encoder (cremad_lit/models/ge2e.py) costs on this CPU, and what its caches hold.

    make bench-ge2e           # or: python benchmarks/bench_ge2e.py [--clips 60] [--threads 1]

On real RAVDESS speech (the first clips of actors 01-15, 16 kHz WAV): the decode alone, the classical member's
features per clip (`data.functionals=ge2e`: decode + encoder + pooling, as the functionals cache fills), the frozen
branch's forward on batches of 8 (what the feature cache's fill runs), each as milliseconds per clip and as times faster
than real time; then the bytes each cache stores per clip (float32): the classical features, the branch's per-layer
means (mean pooling) and every step of every layer (attentive pooling). Training time per candidate: the `minutes`
column of `make bench-lockbox`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from cremad_lit.data.media import read_wav  # noqa: E402
from cremad_lit.models.ge2e import FEATURES, GE2EEncoder, load_ge2e, utterance_features  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared")) / "ravdess-speech"
BATCH = 8


def clips(count: int) -> list[Path]:
    per_actor = -(-count // 15)
    files = [
        f for actor in range(1, 16) for f in sorted((ROOT / f"Actor_{actor:02d}").glob("*.wav"))[:per_actor]
    ]
    return files[:count]


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not ROOT.is_dir():
        raise SystemExit(f"RAVDESS speech not found at {ROOT} (set CREMAD_LIT_SHARED)")
    torch.set_num_threads(args.threads)
    files = clips(args.clips)
    model = load_ge2e()
    # Warm-up: first-call allocations are not the encoder's cost.
    utterance_features(model, torch.zeros(16000))
    waves: list[np.ndarray] = []
    decode_s = timed(lambda: waves.extend(read_wav(str(f)) for f in files))
    audio_s = sum(len(w) for w in waves) / 16000
    features_s = timed(lambda: [utterance_features(model, torch.from_numpy(read_wav(str(f)))) for f in files])
    encoder = GE2EEncoder()
    steps = []

    def branch() -> None:
        for start in range(0, len(waves), BATCH):
            group = [torch.from_numpy(w) for w in waves[start : start + BATCH]]
            lengths = torch.tensor([len(w) for w in group])
            states, mask = encoder.hidden_states(
                torch.nn.utils.rnn.pad_sequence(group, batch_first=True), lengths
            )
            steps.extend(mask.sum(dim=1).tolist())

    branch_s = timed(branch)
    n = len(files)
    step_bytes = encoder.num_layers * encoder.out_features * 4
    rows = [
        ("decode (16 kHz WAV)", decode_s),
        ("classical member's features (`data.functionals=ge2e`): decode + encoder + pooling", features_s),
        (f"frozen branch forward, batches of {BATCH} (the feature cache's fill)", branch_s),
    ]
    lines = [
        "| step | ms per clip | times faster than real time |",
        "| --- | ---: | ---: |",
        *(f"| {label} | {1000 * s / n:.1f} | {audio_s / s:.0f}x |" for label, s in rows),
        "",
        "| cache (float32) | bytes per clip |",
        "| --- | ---: |",
        f"| classical features: 3 layers' mean states + the embedding ({FEATURES} values) | {FEATURES * 4:,} |",
        f"| branch, mean pooling: per-layer means ({encoder.num_layers} x {encoder.out_features}) | {step_bytes:,} |",
        f"| branch, attentive pooling: every step of every layer (mean {np.mean(steps):.0f} steps) | "
        f"{int(np.mean(steps) * step_bytes):,} |",
    ]
    body = (
        "## The GE2E speaker encoder's cost (`make bench-ge2e`)\n\n"
        f"Machine: {machine()}, {args.threads} thread(s). {n} real RAVDESS takes of actors 01-15 "
        f"({audio_s / n:.1f} s each on average), the weights of Resemblyzer's wheel. Training time per candidate: "
        "the `minutes` column of `make bench-lockbox`.\n\n" + "\n".join(lines)
    )
    write_section("bench-ge2e", body)
    print(body)


if __name__ == "__main__":
    main()
