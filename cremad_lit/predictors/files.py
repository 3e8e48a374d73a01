"""Emotion probabilities for media files: decoding a file as a network (a checkpoint or its ONNX export) was trained
to read it, and the speaker groups every predictor normalises by. The predictors call these; use them instead:

    from cremad_lit.predictors import load_predictor
    rows = load_predictor("logs/train/runs/<run>").predict([Path("a.flv")])

Files that cannot be decoded get an `error` (the reason) instead of probabilities. A model trained with
`data.speaker_norm` normalises each speaker's files by that speaker's statistics: by default the files of one folder
are one speaker (`speaker=folder`; `speaker=file` or `speaker=all` otherwise).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig

from cremad_lit.data.dataset import model_inputs, speaker_stats
from cremad_lit.data.features import Preprocessing, clip_info, decode_clip
from cremad_lit.data.functionals import audio_functionals, normalise_by_speaker
from cremad_lit.data.media import MEDIA_FILES, MediaError, media_paths
from cremad_lit.io import write_json, write_text
from cremad_lit.pipeline import AUDIO_ONLY_SPEC
from cremad_lit.plots import plot_counts

log = logging.getLogger(__name__)


SPEAKER_GROUPS = ("folder", "file", "all")


def speaker_of(path: Path, grouping: str) -> str:
    """Which files count as one speaker for a speaker-normalised model: those in one folder, each file, or all."""
    if grouping not in SPEAKER_GROUPS:
        raise ValueError(f"speaker must be one of {SPEAKER_GROUPS}, not {grouping!r}")
    return {"folder": str(path.parent), "file": str(path), "all": ""}[grouping]


def predict_files(
    module, train_cfg: DictConfig, files: list[Path], device: str = "cpu", speaker: str = "folder"
) -> list[dict]:
    spec = module.net.frame_input_spec() or AUDIO_ONLY_SPEC
    settings = dict(train_cfg.data.preprocessing)
    settings["image_size"] = spec["image_size"]
    modalities = module.net.modalities
    prep = Preprocessing(**settings)
    with_functionals = getattr(module.net, "functionals", None) is not None
    module = module.to(device).eval()
    results, batches = [], []
    for path in files:
        try:
            video_path, audio_path = media_paths(path)
            sample = decode_clip(video_path, audio_path, prep, train_cfg.data.decoder, modalities)
            if with_functionals:
                kind = train_cfg.data.get("functionals", "egemaps")
                sample["functionals"] = audio_functionals(
                    video_path, audio_path, prep.audio_source, prep.sample_rate, kind
                )
        except MediaError as error:
            log.warning("skipped %s: %s", error.path, error.reason)
            results.append({"file": str(path), "error": error.reason})
            continue
        inputs = model_inputs(
            sample, modalities, spec["mean"], spec["std"], module.net.audio_input() or "mel"
        )
        batch = {name: tensor[None] for name, tensor in inputs.items()}  # a batch of one
        if "waveform" in batch:
            batch["waveform_lengths"] = torch.tensor([batch["waveform"].shape[1]])
        if "functionals" in sample:
            batch["functionals"] = torch.from_numpy(np.array(sample["functionals"]))[None]
        partial = clip_info(sample).get("partial")
        results.append({"file": str(path), **({"warning": partial} if partial else {})})
        batches.append((results[-1], batch))
    speaker_norm = train_cfg.data.get("speaker_norm", "none")
    if speaker_norm != "none" and "audio" in modalities:
        normalise_speakers([b for _, b in batches], [r["file"] for r, _ in batches], speaker_norm, speaker)
    for result, batch in batches:
        with torch.no_grad():
            inputs = {k: v.to(device) for k, v in batch.items()}
            probabilities = module(inputs).float().softmax(dim=1)[0].cpu().tolist()
        best = max(range(len(module.classes)), key=probabilities.__getitem__)
        result["prediction"] = module.classes[best]
        result["probabilities"] = dict(zip(module.classes, probabilities, strict=True))
    return results


def warn_lone_speakers(speakers: list[str], grouping: str) -> None:
    lone = sum(speakers.count(s) == 1 for s in set(speakers))
    if lone:
        log.warning(
            "speaker-normalised model: %d speaker group(s) (speaker=%s) have one file, normalised by itself; "
            "more recordings of the speaker give a better estimate",
            lone,
            grouping,
        )


def normalise_speakers(batches: list[dict], files: list[str], mode: str, grouping: str) -> None:
    """A model trained with data.speaker_norm sees each speaker's inputs normalised by that speaker's statistics:
    here the groups of files that `grouping` calls one speaker. In place."""
    speakers = [speaker_of(Path(file), grouping) for file in files]
    warn_lone_speakers(speakers, grouping)
    if batches and "mel" in batches[0]:  # a speech encoder reads the raw waveform: only its functionals are
        stats = speaker_stats(((s, b["mel"][0]) for s, b in zip(speakers, batches, strict=True)), mode)
        for name, batch in zip(speakers, batches, strict=True):
            mean, std = stats[name]
            batch["mel"] = (batch["mel"] - mean) / std
    if batches and "functionals" in batches[0]:
        features = {i: b["functionals"][0].numpy() for i, b in enumerate(batches)}
        normalised = normalise_by_speaker(features, dict(enumerate(speakers)), mode)
        for i, batch in enumerate(batches):
            batch["functionals"] = torch.from_numpy(normalised[i])[None]


def media_files(inputs) -> list[Path]:
    """Every media file `inputs` names (files, folders searched recursively); FileNotFoundError if none."""
    items = list(inputs) if isinstance(inputs, list | tuple | ListConfig) else [inputs]
    files: list[Path] = []
    for item in map(Path, map(str, items)):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in MEDIA_FILES)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    if not files:
        raise FileNotFoundError(f"no media files ({', '.join(MEDIA_FILES)}) in {items}")
    return files


def write_predictions(results: list[dict], out: Path) -> pd.DataFrame:
    """predict's outputs into `out`: predictions.json, predictions.csv (the table, returned) and a chart per file."""
    write_json(out / "predictions.json", results)
    rows = [
        {
            "file": r["file"],
            "prediction": r.get("prediction", ""),
            "error": r.get("error", ""),
            "warning": r.get("warning", ""),
            **r.get("probabilities", {}),
        }
        for r in results
    ]
    table = pd.DataFrame(rows)
    write_text(out / "predictions.csv", table.to_csv(index=False))
    for result in results:
        if "probabilities" in result:
            name = Path(result["file"]).stem
            plot_counts(
                pd.Series(result["probabilities"]), out / f"{name}.png", f"{name}: {result['prediction']}"
            )
    return table
