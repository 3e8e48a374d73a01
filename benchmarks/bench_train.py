"""Training benchmark: samples/s and peak memory of both paper models at batch 8, and file-to-probabilities latency.

    make bench-train         # or: python benchmarks/bench_train.py [--steps 3] [--device cuda]

Each model runs in its own process so peak memory is its own. On CPU it uses 32-bit; on a GPU bf16-mixed (autocast).
Weights are random (no download): speed and memory do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "cremad-samples" / "VideoFlash" / "1001_DFA_HAP_XX.flv"


def build(model: str, device: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"model={model}",
                "model.video_backbone.pretrained=false",
                "model.audio_backbone.pretrained=false",
            ],
        )
    return instantiate(cfg.model).to(device)


def one_model(model: str, steps: int, device: str) -> dict:
    from cremad_lit.data.features import Preprocessing, extract_clip, normalise_frames, normalise_mel

    net = build(model, device)
    spec = net.frame_input_spec()
    size = spec["image_size"]
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-5, weight_decay=1e-2)
    batch = {
        "frames": torch.randn(8, 8, 3, size, size, device=device),
        "mel": torch.randn(8, 1, 64, 128, device=device),
        "label": torch.randint(0, 6, (8,), device=device),
    }
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(net(batch).float(), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    net.train()
    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    train_rate = 8 * steps / (time.perf_counter() - started)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )

    net.eval()
    prep = Preprocessing(frames=8, image_size=size)
    latencies = []
    for _ in range(4):
        started = time.perf_counter()
        sample = extract_clip(str(SAMPLE), "", prep)
        inputs = {
            "frames": normalise_frames(torch.from_numpy(sample["frames"]), spec["mean"], spec["std"])[
                None
            ].to(device),
            "mel": normalise_mel(torch.from_numpy(sample["mel"]))[None].to(device),
        }
        with torch.no_grad(), autocast:
            probabilities = net(inputs).float().softmax(1).cpu()
        latencies.append(time.perf_counter() - started)
        assert probabilities.shape == (1, 6)
    return {
        "model": model,
        "train_samples_per_s": train_rate,
        "peak_mb": peak,
        "latency_ms": 1000 * min(latencies[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", help="internal: run one model in this process and print JSON")
    args = parser.parse_args()
    if args.model:
        print(json.dumps(one_model(args.model, args.steps, args.device)))
        return
    results = []
    for model in ("effnet_lstm", "resnet_vit_lstm"):
        out = subprocess.run(
            [sys.executable, __file__, "--model", model, "--steps", str(args.steps), "--device", args.device],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    precision = "bf16-mixed" if args.device == "cuda" else "32-bit"
    memory = "peak GPU memory allocated" if args.device == "cuda" else "peak process RSS"
    lines = [
        f"## Training and inference, {args.device} (`make bench-train`)",
        "",
        f"Machine: {machine()}. Batch 8, 8 frames at 224 px + 64x128 Mel, {precision}, AdamW; "
        f"latency = decode one real CREMA-D flv + features + forward, best of 3.",
        "",
        f"| model | train samples/s | {memory} (MiB) | latency per clip (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['model']} | {r['train_samples_per_s']:.2f} | {r['peak_mb']:.0f} | {r['latency_ms']:.0f} |"
        for r in results
    ]
    body = "\n".join(lines)
    print(body)
    print(f"\nwritten to {write_section(f'bench-train-{args.device}', body)}")


if __name__ == "__main__":
    main()
