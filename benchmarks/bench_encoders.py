"""Frozen-encoder feature cache benchmark: head training from the cache against the same encoder run end to end.

    make bench-encoders       # or: python benchmarks/bench_encoders.py [--actors 6] [--hidden 256 --layers 4]

Three caches, each as a pair of `train.py` runs with the same settings, one reading the cache (the default for a frozen
encoder) and one with `feature_cache=false` (the encoder runs on every batch):
- speech, mean pooling (per-layer means stored) and attentive pooling (every time step stored): a randomly
  initialised WavLM-architecture encoder written with save_pretrained and loaded by pretrained_dir=, exactly as real
  weights are (hub weights cannot be downloaded on the machines that built this; speed does not depend on their
  values), `experiment=ssl_speech` on real RAVDESS speech;
- video: a frozen, randomly initialised timm ResNet-18 per frame (per-frame embeddings stored) + LSTM, video only, on
  generated clips in the real CREMA-D format (flv, 8 frames).
Reported: training clips/s (the TrainingSpeed callback's median over epochs), the one-off cost to fill each cache, and
its size per clip beside the prepared clip cache's. Everything in one run, so the ratios are like for like.
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
CPU = [
    "trainer=cpu",
    "logger=none",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.pin_memory=false",
    "callbacks.early_stopping=null",
]


def train(args: list[str], run_dir: Path, modality: str) -> dict:
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
        "fill": (info.get("encoder_cache") or {}).get(modality),
    }


def folder_size(folder: Path, pattern: str) -> tuple[int, int]:
    files = list(folder.glob(pattern))
    return sum(f.stat().st_size for f in files), len(files)


def cache_pair(name: str, args: list[str], switch: str, modality: str, work: Path) -> dict:
    """The same run from the cache and with the encoder in the loop, and the cache's size per clip."""
    cached = train(args, work / f"{name}-cached", modality)
    end_to_end = train([*args, f"{switch}=false"], work / f"{name}-end-to-end", modality)
    if not cached["fill"] or end_to_end["fill"]:
        raise SystemExit(f"{name}: the cached run filled no {modality} cache, or the end-to-end run did")
    features, count = folder_size(Path(cached["fill"]["dir"]), "*.npy")
    clips, clip_count = folder_size(Path(cached["fill"]["dir"]).parent, "*.npz")
    return {
        "cached": cached,
        "end_to_end": end_to_end,
        "kib_per_clip": features / max(count, 1) / 1024,
        "clip_cache_kib": clips / max(clip_count, 1) / 1024,
    }


def row(label: str, pair: dict) -> str:
    cached, end_to_end, fill = pair["cached"], pair["end_to_end"], pair["cached"]["fill"]
    ratio = cached["clips_per_s"] / end_to_end["clips_per_s"]
    return (
        f"| {label} | {cached['clips_per_s']:.0f} | {end_to_end['clips_per_s']:.1f} | **{ratio:.0f}x** "
        f"| {fill['seconds']:.1f} s for {fill['computed']} clips | {pair['kib_per_clip']:.1f} KiB "
        f"| {pair['clip_cache_kib']:.0f} KiB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    from cremad_lit.data.synthetic import generate
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
        speech = [
            "experiment=ssl_speech",
            "data=ravdess",
            f"data.root={root}",
            f"paths.cache_dir={tmp / 'cache'}",
            f"paths.log_dir={tmp / 'logs'}",
            *CPU,
            f"model.audio_backbone.pretrained_dir={weights}",
            f"trainer.max_epochs={args.epochs}",
        ]
        switch = "model.audio_backbone.feature_cache"
        means = cache_pair("means", speech, switch, "audio", tmp)
        steps = cache_pair("steps", [*speech, "model.audio_backbone.pooling=attentive"], switch, "audio", tmp)
        videos = generate(tmp / "cremad", actors=args.actors, sentences=1, seed=0)
        video = [
            "model=tiny",
            "model/backbone@model.video_backbone=resnet18",
            "model.video_backbone.pretrained=false",
            "model.video_backbone.input_size=112",
            "model.video_backbone.freeze=true",
            "data.modalities=[video]",
            "data.preprocessing.frames=8",
            "data.augment.enabled=false",
            f"data.root={videos}",
            "data.generate=null",
            f"paths.cache_dir={tmp / 'cache'}",
            f"paths.log_dir={tmp / 'logs'}",
            *CPU,
            "data.prepare_workers=0",
            f"trainer.max_epochs={args.epochs}",
        ]
        frames = cache_pair("frames", video, "model.video_backbone.feature_cache", "video", tmp)
        from transformers import AutoModel

        parameters = sum(p.numel() for p in AutoModel.from_pretrained(weights).parameters())
    body = f"""## Frozen-encoder feature cache (`make bench-encoders`)

Machine: {machine()}. One process, {args.epochs} epochs, each row a pair of runs with the same settings: the head
trained from the feature cache (the default for a frozen encoder) and with `feature_cache=false` (the encoder runs on
every batch). Speech: `train.py experiment=ssl_speech` on RAVDESS actors 01-{args.actors:02d}
({means["cached"]["fill"]["stored"]} clips), a randomly initialised WavLM-architecture encoder ({args.layers} transformer
layers, hidden {args.hidden}, {parameters / 1e6:.1f}M parameters; a base model has 12 layers, hidden 768, 94M) loaded
from a save_pretrained folder, frozen, batch 32. Video: a frozen, randomly initialised timm ResNet-18 (11M) on 8 frames
of 112 px + LSTM, video only, on {frames["cached"]["fill"]["stored"]} generated clips in the CREMA-D format, batch 8.

| frozen encoder, what is stored | training clips/s from the cache | end to end | ratio | one-off fill | cache per clip | prepared clip cache per clip |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{row("speech, mean pooling: per-layer means", means)}
{row("speech, attentive pooling: every layer at every step", steps)}
{row("video: per-frame embeddings", frames)}

Every later run on these clips with the same encoder, weights and preprocessing reuses the fill. Sizes are float32;
a base-size speech encoder stores 13 x 768 x 4 bytes = 39 KiB per clip for mean pooling and 13 x 768 x 4 bytes x ~50
steps per second = ~6 MB per 3 s clip for attentive pooling (`feature_cache_dtype=float16` halves it).
Not measured here: a base-size encoder on a GPU (no GPU was lent to the task that built this).
"""
    write_section("bench-encoders", body)
    print(body)


if __name__ == "__main__":
    main()
