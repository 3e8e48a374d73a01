"""Serve the demo page for a trained model: drop a clip, see the probabilities, the frames and the Mel image it read.

    python -m cremad_lit app ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    python -m cremad_lit app ckpt_path=logs/train/runs/<run> examples=../shared/cremad-samples/VideoFlash port=7861

Local and offline: no account, no share link. The page and its Python API: cremad_lit/app.py.
"""

from __future__ import annotations

import os

import hydra
import torch
from omegaconf import DictConfig

from cremad_lit.app import IsolatedJudge, build_page, examples_in, serve
from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly


@hydra.main(version_base="1.3", config_path="../conf", config_name="app")
@stops_cleanly
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    require_environment()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    judge = IsolatedJudge(cfg.ckpt_path, cfg.ensemble_weights, device, cfg.concurrency, cfg.timeout_s)
    examples = examples_in(cfg.examples or judge.description["root"])
    names = ", ".join(f"{name} ({weight:.2f})" for name, weight in judge.description["members"])
    description = (
        f"Model: {names}. Classes: {', '.join(judge.classes)}. Reads: {', '.join(judge.modalities)}. "
        "Everything runs on this machine."
    )
    page = build_page(judge, examples, description)
    print(f"serving the page for {names} at http://{cfg.host}:{cfg.port} (Ctrl+C stops it)", flush=True)
    try:
        serve(
            page,
            cfg.host,
            cfg.port,
            examples,
            concurrency=cfg.concurrency,
            queue_size=cfg.queue_size,
            max_upload=cfg.max_upload,
            auth=tuple(cfg.auth) if cfg.auth else None,
        )
    finally:
        judge.close()


if __name__ == "__main__":
    main()
