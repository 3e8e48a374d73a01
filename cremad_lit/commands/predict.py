"""Predict the six emotions' probabilities for any video files with a face and speech (or WAV files, for an
audio-only model), whatever their names.

    python -m cremad_lit predict ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt inputs=[a.flv,b.mp4]
    python -m cremad_lit predict ckpt_path=... inputs=/path/to/folder
    python -m cremad_lit predict ckpt_path=[A,B,C] inputs=...     # an ensemble (or a multirun folder): mean probabilities
    python -m cremad_lit predict ckpt_path=[A.ckpt,<baseline run dir>] ensemble_weights=[0.6,0.4] inputs=...
    python -m cremad_lit predict ckpt_path=logs/export/runs/<time>/model.onnx inputs=...   # onnxruntime

The model and its preprocessing are rebuilt from the checkpoint; audio comes from each video's own track. Prints a table
and writes predictions.json, predictions.csv and one bar chart per clip (`<name>.png`) into its run dir. Files that
cannot be decoded are reported with the reason and skipped. A model trained with `data.speaker_norm` normalises each
speaker's files by that speaker's statistics: by default the files of one folder are one speaker (`speaker=folder`;
`speaker=file` or `speaker=all` otherwise).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig

from cremad_lit.classical import is_classical, load_classical
from cremad_lit.classical import probabilities as classical_probabilities
from cremad_lit.data.adapters.cremad import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from cremad_lit.data.dataset import speaker_stats
from cremad_lit.data.features import (
    Preprocessing,
    decode_clip,
    normalise_frames,
    normalise_mel,
    waveform_tensor,
)
from cremad_lit.data.functionals import audio_functionals, normalise_by_speaker
from cremad_lit.data.media import MediaError
from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly
from cremad_lit.evaluation import (
    load_checkpoint,
    member_weights,
    model_from_checkpoint,
    normalised_weights,
    weighted_members,
)
from cremad_lit.export import is_exported, load_exported
from cremad_lit.io import write_json
from cremad_lit.pipeline import AUDIO_ONLY_SPEC
from cremad_lit.plots import plot_counts

log = logging.getLogger(__name__)
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS  # a WAV suits an audio-only model


def expand_inputs(inputs) -> list[Path]:
    items = list(inputs) if isinstance(inputs, list | tuple | ListConfig) else [inputs]
    files: list[Path] = []
    for item in map(Path, map(str, items)):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    if not files:
        raise FileNotFoundError(f"no media files ({', '.join(MEDIA_EXTENSIONS)}) in {items}")
    return files


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
        is_audio = path.suffix.lower() in AUDIO_EXTENSIONS
        video_path, audio_path = ("", str(path)) if is_audio else (str(path), "")
        try:
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
        batch = {}
        if "frames" in sample:
            frames = normalise_frames(torch.from_numpy(sample["frames"]), spec["mean"], spec["std"])
            batch["frames"] = frames[None]
        if "audio" in modalities and module.net.audio_input() == "waveform":
            batch["waveform"] = waveform_tensor(sample["waveform"])[None]
            batch["waveform_lengths"] = torch.tensor([batch["waveform"].shape[1]])
        elif "mel" in sample:
            batch["mel"] = normalise_mel(torch.from_numpy(sample["mel"]))[None]
        if "functionals" in sample:
            batch["functionals"] = torch.from_numpy(np.array(sample["functionals"]))[None]
        results.append({"file": str(path)})
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


def predict_files_classical(run_dir: str, files: list[Path], speaker: str = "folder") -> list[dict]:
    """A baseline run's saved classical model on files: their functionals (from each file's audio), standardised per
    speaker group as it was trained, its probabilities."""
    arrays, info = load_classical(run_dir)
    classes = list(info["classes"])
    prep = info["data"]["preprocessing"]
    results, features = [], {}
    for path in files:
        is_audio = path.suffix.lower() in AUDIO_EXTENSIONS
        video_path, audio_path = ("", str(path)) if is_audio else (str(path), "")
        results.append({"file": str(path)})
        if info["functionals"] is None:  # the majority class reads nothing
            features[len(results) - 1] = np.zeros(1, dtype=np.float32)
            continue
        try:
            features[len(results) - 1] = audio_functionals(
                video_path, audio_path, prep["audio_source"], prep["sample_rate"], info["functionals"]
            )
        except MediaError as error:
            log.warning("skipped %s: %s", error.path, error.reason)
            results[-1]["error"] = error.reason
    if info["speaker_norm"] != "none" and features:
        speakers = {i: speaker_of(Path(results[i]["file"]), speaker) for i in features}
        warn_lone_speakers(list(speakers.values()), speaker)
        features = normalise_by_speaker(features, speakers, info["speaker_norm"])
    if features:
        rows = sorted(features)
        probabilities = classical_probabilities(arrays, np.stack([features[i] for i in rows]), len(classes))
        for i, probs in zip(rows, probabilities, strict=True):
            results[i]["prediction"] = classes[int(probs.argmax())]
            results[i]["probabilities"] = dict(zip(classes, map(float, probs), strict=True))
    return results


def average_files(members: list[list[dict]], weights) -> list[dict]:
    """Per file, the weighted mean of the members' probabilities (a file any member could not read keeps its error)."""
    weights = normalised_weights(weights, len(members))
    fused = []
    for rows in zip(*members, strict=True):
        errors = [r["error"] for r in rows if "error" in r]
        if errors:
            fused.append({"file": rows[0]["file"], "error": errors[0]})
            continue
        classes = list(rows[0]["probabilities"])
        if any(list(r["probabilities"]) != classes for r in rows):
            raise ValueError(
                "the ensemble's checkpoints predict different class lists: average only like with like"
            )
        probabilities = {
            e: float(sum(w * r["probabilities"][e] for w, r in zip(weights, rows, strict=True)))
            for e in classes
        }
        fused.append(
            {
                "file": rows[0]["file"],
                "prediction": max(probabilities, key=probabilities.get),
                "probabilities": probabilities,
            }
        )
    return fused


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


@hydra.main(version_base="1.3", config_path="../../conf", config_name="predict")
@stops_cleanly
def main(cfg: DictConfig) -> None:
    require_environment()  # a broken install stops here, before any clip is touched
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    files = expand_inputs(cfg.inputs)
    found = weighted_members(cfg.ckpt_path)
    paths = [member for member, _ in found]
    weights = member_weights(cfg, found)
    if isinstance(weights, str):
        raise ValueError(
            f"ensemble_weights={weights}: predict has no labels to choose weights with; give the weights "
            "`evaluate.py ... ensemble_weights=val` chose (its metrics.json: ensemble.weights)"
        )
    members = []
    for path in paths:
        if is_classical(path):
            members.append(predict_files_classical(path, files, cfg.get("speaker", "folder")))
            continue
        module, train_cfg = (
            load_exported(path) if is_exported(path) else model_from_checkpoint(load_checkpoint(path))
        )
        members.append(predict_files(module, train_cfg, files, device, cfg.get("speaker", "folder")))
    results = members[0] if len(members) == 1 else average_files(members, weights)
    out = Path(cfg.paths.output_dir)
    write_json(out / "predictions.json", results)
    rows = [
        {
            "file": r["file"],
            "prediction": r.get("prediction", ""),
            "error": r.get("error", ""),
            **r.get("probabilities", {}),
        }
        for r in results
    ]
    table = pd.DataFrame(rows)
    table.to_csv(out / "predictions.csv", index=False)
    for result in results:
        if "probabilities" in result:
            name = Path(result["file"]).stem
            plot_counts(
                pd.Series(result["probabilities"]), out / f"{name}.png", f"{name}: {result['prediction']}"
            )
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(table.drop(columns=["error"] if not table["error"].any() else []).to_string(index=False))
    print(f"run dir: {out.resolve()} (predictions.json, predictions.csv, one chart per clip)")


if __name__ == "__main__":
    main()
