"""Frozen-encoder feature cache benchmark: head training from the cache against the same encoder run end to end.

    make bench-encoders       # or: python benchmarks/bench_encoders.py [--actors 6] [--hidden 256 --layers 4]

A randomly initialised WavLM-architecture encoder (hub weights cannot be downloaded on the machines that built this;
speed does not depend on the weights' values) is written with save_pretrained and loaded by pretrained_dir=, exactly
as real weights are. Two `train.py experiment=ssl_speech` runs on the same RAVDESS actors, same settings: one with the
feature cache (model.audio_backbone.feature_cache=true: the default), one with it off (the encoder runs on every
batch). Reported: training clips/s (the TrainingSpeed callback's median over epochs), the one-off cost to fill the
cache, and its size per clip beside the prepared clip cache's. Everything in one run, so the ratio is like for like.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared"))


def train(args: list[str], run_dir: Path) -> dict:
    command = [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"]
    print("==", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    subprocess.run(command, cwd=REPO, check=True, env=env)
    history = pd.read_csv(run_dir / "history.csv")
    info = json.loads((run_dir / "run_info.json").read_text())
    return {
        "clips_per_s": float(history["speed/clips_per_s"].median()),
        "wall_s": time.perf_counter() - started,
        "encoder_cache": info.get("encoder_cache"),
    }


def folder_size(folder: Path, pattern: str) -> tuple[int, int]:
    files = list(folder.glob(pattern))
    return sum(f.stat().st_size for f in files), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    from cremad_lit.models.speech_encoders import tiny_encoder_folder

    ravdess = SHARED / "ravdess-speech"
    if not ravdess.is_dir():
        raise SystemExit(f"RAVDESS speech not found at {ravdess} (set CREMAD_LIT_SHARED)")
    with tempfile.TemporaryDirectory(prefix="bench-encoders-") as tmp:
        tmp = Path(tmp)
        root = tmp / "ravdess"
        root.mkdir()
        for actor in range(1, args.actors + 1):
            (root / f"Actor_{actor:02d}").symlink_to(ravdess / f"Actor_{actor:02d}")
        weights = tiny_encoder_folder(
            tmp / "encoder", "wavlm", layers=args.layers, hidden=args.hidden, conv_dim=args.hidden // 2
        )
        common = [
            "experiment=ssl_speech",
            "data=ravdess",
            f"data.root={root}",
            f"paths.cache_dir={tmp / 'cache'}",
            f"paths.log_dir={tmp / 'logs'}",
            "trainer=cpu",
            "logger=none",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.pin_memory=false",
            f"model.audio_backbone.pretrained_dir={weights}",
            f"trainer.max_epochs={args.epochs}",
            "callbacks.early_stopping=null",
        ]
        cached = train(common, tmp / "cached")
        end_to_end = train([*common, "model.audio_backbone.feature_cache=false"], tmp / "end_to_end")
        fill = cached["encoder_cache"]
        features_bytes, features_count = folder_size(Path(fill["dir"]), "*.npy")
        clip_cache = Path(fill["dir"]).parent
        clips_bytes, clips_count = folder_size(clip_cache, "*.npz")
        from transformers import AutoModel

        parameters = sum(p.numel() for p in AutoModel.from_pretrained(weights).parameters())
    ratio = cached["clips_per_s"] / end_to_end["clips_per_s"]
    body = f"""## Frozen-encoder feature cache (`make bench-encoders`)

Machine: {machine()}. `train.py experiment=ssl_speech` on RAVDESS actors 01-{args.actors:02d} ({fill["stored"]} clips),
a randomly initialised WavLM-architecture encoder ({args.layers} transformer layers, hidden {args.hidden},
{parameters / 1e6:.1f}M parameters; a base model has 12 layers, hidden 768, 94M) loaded from a save_pretrained
folder, frozen, mean pooling, {args.epochs} epochs, batch 32, one process.

| | training clips/s | wall time of the run |
| --- | ---: | ---: |
| head from the feature cache (`feature_cache=true`, the default) | {cached["clips_per_s"]:.0f} | {cached["wall_s"]:.0f} s (fill included) |
| the encoder on every batch (`feature_cache=false`) | {end_to_end["clips_per_s"]:.1f} | {end_to_end["wall_s"]:.0f} s |
| **ratio** | **{ratio:.0f}x** | |

Filling the cache (once per encoder, weights and preprocessing; every later run on these clips reuses it):
{fill["seconds"]:.1f} s for {fill["computed"]} clips ({fill["computed"] / max(fill["seconds"], 1e-9):.1f} clips/s).
Size: {features_bytes / max(features_count, 1) / 1024:.1f} KiB per clip ({args.layers + 1}
layers x {args.hidden} float32 means), beside {clips_bytes / max(clips_count, 1) / 1024:.0f} KiB per clip in the
prepared clip cache (Mel image and int16 waveform). A base-size encoder stores 13 x 768 x 4 bytes = 39 KiB per clip.
Not measured here: a base-size encoder on a GPU (no GPU was lent to the task that built this).
"""
    write_section("bench-encoders", body)
    print(body)


if __name__ == "__main__":
    main()
