"""The frozen-encoder feature cache: a frozen encoder's outputs for every clip, computed once and stored beside the
prepared clip cache, so training, validation and testing read them and the encoder never runs: a sweep over the
readout, temporal model, fusion, learning rate or seeds costs only the head.

    python train.py experiment=ssl_speech data=ravdess data.root=DIR          # filled on first use, then reused
    python train.py experiment=ssl_speech ... model.audio_backbone.pooling=attentive     # per-time-step storage
    python train.py ... model.video_backbone.freeze=true data.augment.enabled=false       # per-frame video features
    python train.py experiment=ssl_speech ... model.audio_backbone.feature_cache=false   # run the encoder every step

train.py hands the net's frozen encoders to the DataModule at construction (`frozen_encoders(net)`, in
`ModelInputs.frozen`); its setup fills the cache (`plan` and `fill`) and its datasets read the folders.

What is stored, per clip (what the branch's readout needs, so training from it gives the logits of running the
encoder; float32 unless `feature_cache_dtype=float16`):
- `means`, a frozen speech encoder with mean pooling: every hidden layer's mean over the valid time steps
  (layers x hidden). Exact, not an approximation: the learned weighted sum over layers commutes with a mean over time.
- `steps`, a frozen speech encoder with attentive pooling: every hidden layer at every valid time step
  (steps x layers x hidden; ~50 steps per second, so ~2 MB per 3 s clip for a base model in float16).
- `frames`, a frozen video backbone: its embedding of every sampled frame (frames x features). Only without frame
  augmentation or mixup (the cache holds the frames as prepared); with either, the backbone runs on every batch.
Layout: `<clip cache dir>/encoder-<fingerprint>/<clip_id>.npz` (one array, its CRC-32 checked on every read), `encoder.json` (what the fingerprint covers) and
`skipped.json`. The fingerprint hashes the encoder's weights, its preprocessing and the storage kind, and the folder
sits under the clip cache's preprocessing key, so other weights or other settings never read these. Every file is
written atomically (a temporary file renamed into place): parallel jobs fill the same folder safely, an interrupted
fill resumes where it stopped, and bad clips are reported, never stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cremad_lit.data.media import MediaError
from cremad_lit.io import write_atomic, write_json
from cremad_lit.models.encoder import weights_module

log = logging.getLogger(__name__)
STORED = {
    "means": "per-layer mean over the valid time steps (layers x hidden)",
    "steps": "every layer at every valid time step (steps x layers x hidden)",
    "frames": "the backbone's embedding of every sampled frame (frames x features)",
}


def audio_storage(encoder) -> str | None:
    """What a speech encoder's cache holds: `means` (mean pooling) or `steps` (attentive pooling); None when the
    encoder must run in the loop (fine-tuned, an image backbone on the Mel, or feature_cache=false)."""
    if getattr(encoder, "input_key", None) != "waveform" or not encoder.feature_cache or encoder.finetune:
        return None
    return "means" if encoder.pool is None else "steps"


def video_storage(backbone, augment, frame_mixup: bool) -> str | None:
    """`frames` for a frozen video backbone whose training frames are the prepared ones; else None (logged why)."""
    if not getattr(backbone, "frozen", False) or not getattr(backbone, "feature_cache", False):
        return None
    if augment is not None and augment.changes_frames():
        log.info(
            "frozen video backbone, but training flips and crops its frames: it runs on every batch "
            "(data.augment.hflip=0 data.augment.crop_scale=1, or data.augment.enabled=false, to train from its cache)"
        )
        return None
    if frame_mixup:
        log.info(
            "frozen video backbone, but mixup blends the frames: it runs on every batch (loss.mixup_alpha=0)"
        )
        return None
    return "frames"


def frozen_encoders(net) -> dict:
    """{modality: encoder} for each branch of the net that may train from a feature cache (frozen, cache allowed):
    what the DataModule is handed (ModelInputs.frozen); whether the video one can is the data's to say (`plan`)."""
    encoders = {}
    if "audio" in net.modalities and audio_storage(net.audio_backbone):
        encoders["audio"] = net.audio_backbone
    backbone = getattr(net, "video_backbone", None)
    if (
        "video" in net.modalities
        and getattr(backbone, "frozen", False)
        and getattr(backbone, "feature_cache", False)
    ):
        encoders["video"] = backbone
    return encoders


def plan(encoders: dict, augment, frame_mixup: bool = False) -> dict:
    """{modality: (frozen encoder, what its cache stores)} for each encoder that can train from a cache, given how the
    data changes the clips in training (flips, crops, mixup's blends)."""
    plans = {}
    if "audio" in encoders and (storage := audio_storage(encoders["audio"])):
        plans["audio"] = (encoders["audio"], storage)
    if "video" in encoders and (storage := video_storage(encoders["video"], augment, frame_mixup)):
        plans["video"] = (encoders["video"], storage)
    return plans


def fill(plans: dict, clip_cache_dir, dataset, batch_size: int, device: str = "cpu") -> tuple[dict, dict]:
    """Fill (or reuse) each planned encoder's feature cache for every clip of `dataset`: ({modality: its folder},
    {modality: fill report}). The DataModule's datasets then read those folders."""
    folders, reports = {}, {}
    for modality, (encoder, storage) in plans.items():
        cache = EncoderFeatureCache(clip_cache_dir, encoder, storage)
        reports[modality] = cache.fill(dataset, batch_size, device)
        encoder.to("cpu")  # the trainer places the whole module
        folders[modality] = str(cache.dir)
    return folders, reports


def fingerprint(encoder, storage: str, dtype: str) -> str:
    """sha1 of the encoder's weights (every tensor, in name order), its preprocessing and the storage kind."""
    digest = hashlib.sha1()
    for name, tensor in sorted(weights_module(encoder).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps(preprocessing(encoder), sort_keys=True).encode())
    digest.update(f"{storage}:{dtype}".encode())
    return digest.hexdigest()[:16]


def preprocessing(encoder) -> dict:
    stored = getattr(encoder, "stored_configs", None)
    return stored["preprocessor_config"] if stored else {**encoder.input_spec()}


def entry_of(folder: Path, clip_id: str) -> Path:
    """A clip's entry: an .npz whose one member carries a CRC-32, so a byte changed on disk is found when read."""
    return Path(folder) / f"{clip_id}.npz"


def read_entry(entry: Path) -> np.ndarray:
    """A stored entry's features; ValueError when it does not read back whole (cut short, or its checksum fails)."""
    try:
        with np.load(entry) as stored:
            return stored["features"]
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from error


class EncoderFeatureCache:
    def __init__(self, clip_cache_dir: str | Path, encoder, storage: str = "means"):
        if storage not in STORED:
            raise ValueError(f"storage must be one of {tuple(STORED)}, not {storage!r}")
        self.encoder, self.storage = encoder, storage
        self.dtype = getattr(encoder, "feature_cache_dtype", "float32")
        self.fingerprint = fingerprint(encoder, storage, self.dtype)
        self.dir = Path(clip_cache_dir) / f"encoder-{self.fingerprint}"

    def entry(self, clip_id: str) -> Path:
        return entry_of(self.dir, clip_id)

    def fill(self, dataset, batch_size: int = 8, device: str | torch.device = "cpu") -> dict:
        """Compute and store every clip of `dataset` (a ClipDataset) not stored yet."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = getattr(
            self.encoder, "name", type(self.encoder).__name__
        )  # a timm or hub name, else the class
        write_json(
            self.dir / "encoder.json",
            {
                "encoder": name,
                "fingerprint": self.fingerprint,
                "storage": self.storage,
                "stored": f"{STORED[self.storage]}, {self.dtype}",
                "features": self.encoder.out_features,
                **({"layers": self.encoder.num_layers} if self.storage != "frames" else {}),
            },
        )
        started = time.perf_counter()
        rows = [row for row in dataset.clips.itertuples() if not self.entry(row.clip_id).is_file()]
        read = dataset.frames if self.storage == "frames" else dataset.waveform
        skipped, done = [], 0
        encoder = self.encoder.to(device).eval()
        progress = tqdm(total=len(rows), desc=f"encoder features ({name})", unit="clip")
        for start in range(0, len(rows), batch_size):
            batch_rows, inputs = [], []
            for row in rows[start : start + batch_size]:
                try:
                    inputs.append(read(row))
                    batch_rows.append(row)
                except MediaError as error:
                    skipped.append({"clip_id": row.clip_id, "reason": str(error)})
            if inputs:
                for row, features in zip(batch_rows, self.compute(encoder, inputs, device), strict=True):
                    stored = features.astype(self.dtype)
                    write_atomic(
                        self.entry(row.clip_id), lambda handle, a=stored: np.savez(handle, features=a)
                    )
                    done += 1
            progress.update(len(rows[start : start + batch_size]))
        progress.close()
        if skipped:
            write_json(self.dir / "skipped.json", skipped)
            for clip in skipped:
                log.warning("encoder features: skipped clip %s: %s", clip["clip_id"], clip["reason"])
        stored = sum(self.entry(c).is_file() for c in dataset.clips["clip_id"])
        log.info(
            "encoder feature cache %s (%s): %d clips computed now, %d stored, %d skipped",
            self.dir,
            self.storage,
            done,
            stored,
            len(skipped),
        )
        return {
            "storage": self.storage,
            "computed": done,
            "stored": stored,
            "skipped": skipped,
            "dir": str(self.dir),
            "seconds": round(time.perf_counter() - started, 2),
        }

    def compute(self, encoder, inputs: list[torch.Tensor], device) -> list[np.ndarray]:
        """Each clip's stored array, from a batch of its waveforms (zero-padded, the padding masked out) or frames."""
        with torch.no_grad():
            if self.storage == "frames":
                frames = torch.stack(inputs).to(device)  # B x T x 3 x H x W
                per_frame = encoder(frames.flatten(0, 1)).view(*frames.shape[:2], -1)
                return list(per_frame.float().cpu().numpy())
            from cremad_lit.models.speech_encoders import layer_means

            lengths = torch.tensor([len(w) for w in inputs], device=device)
            padded = torch.nn.utils.rnn.pad_sequence(inputs, batch_first=True).to(device)
            states, mask = encoder.hidden_states(padded, lengths)
            if self.storage == "means":
                return list(layer_means(states, mask))
            steps = states.permute(1, 2, 0, 3).float().cpu()  # B x T x layers x hidden
            return [clip[valid].numpy() for clip, valid in zip(steps, mask.cpu(), strict=True)]
