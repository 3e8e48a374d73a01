"""Decode every clip once into the prepared cache (parallel, resumable, with a report of skipped clips).

    python -m cremad_lit prepare data.root=/path/to/CREMA-D                 # frames sized for model=effnet_lstm
    python -m cremad_lit prepare data.root=DIR model=resnet_vit_lstm data.preprocessing.face_crop=haar

The cache folder is named by the preprocessing settings, so training with the same settings reuses it and any change
(frames, size, face crop, Mel settings) makes a new one. Writes prepare_report.json into the cache and the run dir.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cremad_lit.data.datamodule import ModelInputs
from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly
from cremad_lit.io import write_json
from cremad_lit.pipeline import build_datamodule, frame_spec_without_weights
from cremad_lit.plots import draw_faces


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
@stops_cleanly
def main(cfg: DictConfig) -> None:
    require_environment()  # a broken install stops here, before any clip is touched
    datamodule = build_datamodule(
        cfg.data, ModelInputs.of_spec(frame_spec_without_weights(cfg.model)), cache="auto"
    )
    clips = datamodule.catalog()  # data=synthetic: the missing clips generated first
    settings = datamodule.cache_settings
    report = datamodule.cache.build(
        clips, settings.decoder, settings.prepare_workers, cfg.retry_skipped, settings.decode_timeout_s
    )
    report["rejected"] = clips.attrs["rejected"]
    out = Path(cfg.paths.output_dir)
    report["left_out"] = datamodule.cache.lacking(clips, datamodule.modalities)
    write_json(out / "prepare_report.json", report)
    write_json(datamodule.cache.dir / "prepare_report.json", report)
    faces = report["faces"]
    print(
        f"{report['clips']} clips in {report['cache_dir']} ({report['decoded_now']} decoded now in {report['seconds']} s, "
        f"{len(report['skipped'])} skipped, {len(report['left_out'])} without a modality of data.modalities); "
        f"report: {(out / 'prepare_report.json').resolve()}"
    )
    if draw_faces(datamodule, out / "faces.png"):
        rate = (
            ""
            if faces["rate"] is None
            else f"face in {faces['rate']:.1%} of {faces['frames_searched']} frames, "
        )
        print(
            f"faces (face_crop={faces['detector']}): {rate}{len(faces['fallback_clips'])} clips fell back to the "
            f"centre square; contact sheet: {(out / 'faces.png').resolve()}"
        )


if __name__ == "__main__":
    main()
