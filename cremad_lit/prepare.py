"""Decode every clip once into the prepared cache (parallel, resumable, with a report of skipped clips).

    python -m cremad_lit.prepare data.root=/path/to/CREMA-D                 # frames sized for model=effnet_lstm
    python -m cremad_lit.prepare data.root=DIR model=resnet_vit_lstm data.preprocessing.face_crop=haar

The cache folder is named by the preprocessing settings, so training with the same settings reuses it and any change
(frames, size, face crop, Mel settings) makes a new one. Writes prepare_report.json into the cache and the run dir.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cremad_lit.data.cache import write_json
from cremad_lit.environment import require_environment
from cremad_lit.pipeline import build_datamodule, frame_spec_without_weights


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    require_environment()  # a broken install stops here, before any clip is touched
    datamodule = build_datamodule(cfg.data, frame_spec_without_weights(cfg.model), cache="auto")
    if datamodule.generate:  # data=synthetic: write whatever clips are missing
        from cremad_lit.data.synthetic import generate

        generate(datamodule.root, **datamodule.generate)
    clips = datamodule.catalog()
    report = datamodule.cache.build(clips, datamodule.decoder, datamodule.prepare_workers, cfg.retry_skipped)
    report["rejected"] = clips.attrs["rejected"]
    out = Path(cfg.paths.output_dir)
    write_json(out / "prepare_report.json", report)
    write_json(datamodule.cache.dir / "prepare_report.json", report)
    print(
        f"{report['clips']} clips in {report['cache_dir']} ({report['decoded_now']} decoded now in {report['seconds']} s, "
        f"{len(report['skipped'])} skipped); report: {(out / 'prepare_report.json').resolve()}"
    )


if __name__ == "__main__":
    main()
