"""Export a trained network to ONNX, with its class names and preprocessing settings beside it.

    python -m cremad_lit export ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    python -m cremad_lit predict ckpt_path=logs/export/runs/<time>/model.onnx inputs=[a.flv]

Writes model.onnx and model.json into its run dir and prints how far onnxruntime's probabilities are from torch's on
an example batch. What is and is not in the graph: cremad_lit/export.py.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cremad_lit.errors import Stop, stops_cleanly
from cremad_lit.export import export_onnx
from cremad_lit.predictors import load_checkpoint, model_from_checkpoint

FORMATS = ("onnx",)


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@stops_cleanly
def main(cfg: DictConfig) -> None:
    if cfg.format not in FORMATS:
        raise Stop(f"format={cfg.format}: the formats are {', '.join(FORMATS)}")
    path = Path(str(cfg.ckpt_path))
    if path.is_dir():
        raise Stop(
            f"ckpt_path={path} is a folder: export takes one network's checkpoint (an ensemble's classical member "
            "runs outside any graph; its network is the run's metrics.json `checkpoint`)"
        )
    module, train_cfg = model_from_checkpoint(load_checkpoint(path))
    out = Path(cfg.paths.output_dir)
    settings = export_onnx(module, train_cfg, out, source=str(path.resolve()))
    print(
        f"exported {', '.join(settings['modalities'])} network ({len(settings['classes'])} classes; inputs "
        f"{', '.join(settings['inputs'])}) to {out.resolve() / 'model.onnx'}; onnxruntime vs torch: largest "
        f"probability difference {settings['max_abs_difference_from_torch']:.1e}"
    )


if __name__ == "__main__":
    main()
