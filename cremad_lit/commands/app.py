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

from cremad_lit.app import Judge, build_page, examples_in, serve
from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly
from cremad_lit.predictors import Network, load_predictor


@hydra.main(version_base="1.3", config_path="../conf", config_name="app")
@stops_cleanly
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    require_environment()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    judge = Judge(load_predictor(cfg.ckpt_path, cfg.ensemble_weights, device), device)
    networks = [m for m, _ in judge.members if isinstance(m, Network)]
    examples = examples_in(cfg.examples or (networks[0].train_cfg.data.get("root") if networks else None))
    names = ", ".join(f"{m.name} ({weight:.2f})" for m, weight in judge.members)
    description = (
        f"Model: {names}. Classes: {', '.join(judge.classes)}. Reads: {', '.join(judge.modalities)}. "
        "Everything runs on this machine."
    )
    page = build_page(judge, examples, description)
    print(f"serving the page for {names} at http://{cfg.host}:{cfg.port} (Ctrl+C stops it)", flush=True)
    serve(page, cfg.host, cfg.port, examples)


if __name__ == "__main__":
    main()
