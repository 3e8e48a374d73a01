"""The frozen-encoder feature cache: a frozen speech encoder's outputs for every clip, computed once and stored beside
the prepared clip cache, so training, validation and testing read them and the encoder never runs: a sweep over the
readout, fusion, learning rate or seeds costs only the head.

    python train.py experiment=ssl_speech data=ravdess data.root=DIR          # filled on first use, then reused
    python train.py experiment=ssl_speech ... model.audio_backbone.feature_cache=false   # run the encoder every step

What is stored: per clip, the mean over its valid time steps of every hidden layer (layers x hidden, float32). With
mean pooling that is exact, not an approximation: the readout is a weighted sum over layers, and a weighted sum over
layers commutes with a mean over time. (Attentive pooling or fine-tuning needs the encoder in the loop: no cache.)
Layout: `<clip cache dir>/encoder-<fingerprint>/<clip_id>.npy`, `encoder.json` (what the fingerprint covers) and
`skipped.json`. The fingerprint hashes the encoder's weights and its preprocessing config, and the folder sits under
the clip cache's preprocessing key, so other weights or other audio settings never read these. Every file is written
atomically (a temporary file renamed into place): parallel jobs fill the same folder safely, an interrupted fill
resumes where it stopped, and bad clips are reported, never stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cremad_lit.data.cache import write_atomic, write_json
from cremad_lit.data.media import MediaError

log = logging.getLogger(__name__)


def can_cache(encoder) -> bool:
    """A frozen speech encoder with mean pooling: its per-layer means are all the readout needs."""
    return (
        getattr(encoder, "input_key", None) == "waveform"
        and encoder.feature_cache
        and not encoder.finetune
        and encoder.pool is None
    )


def use_encoder_cache(net, datamodule, device: str = "cpu") -> dict | None:
    """Fill (or reuse) the feature cache of the net's audio encoder for every clip of the DataModule, and make its
    datasets read it. None when the encoder cannot be cached or there is no clip cache to sit beside."""
    encoder = getattr(net, "audio_backbone", None)
    if encoder is None or not can_cache(encoder):
        return None
    if datamodule.cache is None:
        log.info("data.cache=off: no encoder feature cache, the encoder runs on every batch")
        return None
    datamodule.prepare_data()
    datamodule.setup("fit")
    cache = EncoderFeatureCache(datamodule.cache.dir, encoder)
    report = cache.fill(datamodule.datasets["all"], datamodule.eval_batch_size, device)
    encoder.to("cpu")  # the trainer places the whole module
    datamodule.encoder_features = str(cache.dir)
    for dataset in datamodule.datasets.values():
        dataset.encoder_features = cache.dir
    return report


def fingerprint(encoder) -> str:
    """sha1 of the encoder's weights (every tensor, in name order) and its preprocessing config."""
    digest = hashlib.sha1()
    for name, tensor in sorted(encoder.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps(encoder.stored_configs["preprocessor_config"], sort_keys=True).encode())
    return digest.hexdigest()[:16]


class EncoderFeatureCache:
    def __init__(self, clip_cache_dir: str | Path, encoder):
        self.encoder = encoder
        self.fingerprint = fingerprint(encoder)
        self.dir = Path(clip_cache_dir) / f"encoder-{self.fingerprint}"

    def entry(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.npy"

    def fill(self, dataset, batch_size: int = 8, device: str | torch.device = "cpu") -> dict:
        """Compute and store every clip of `dataset` (a CremaDataset reading waveforms) not stored yet."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(
            self.dir / "encoder.json",
            {
                "encoder": self.encoder.name,
                "fingerprint": self.fingerprint,
                "layers": self.encoder.num_layers,
                "hidden": self.encoder.out_features,
                "stored": "per-layer mean over valid time steps, float32",
            },
        )
        started = time.perf_counter()
        rows = [row for row in dataset.clips.itertuples() if not self.entry(row.clip_id).is_file()]
        skipped, done = [], 0
        encoder = self.encoder.to(device).eval()
        progress = tqdm(total=len(rows), desc=f"encoder features ({self.encoder.name})", unit="clip")
        for start in range(0, len(rows), batch_size):
            batch_rows, waveforms = [], []
            for row in rows[start : start + batch_size]:
                try:
                    waveforms.append(dataset.waveform(row))
                    batch_rows.append(row)
                except MediaError as error:
                    skipped.append({"clip_id": row.clip_id, "reason": str(error)})
            if waveforms:
                means = self.compute(encoder, waveforms, device)
                for row, mean in zip(batch_rows, means, strict=True):
                    write_atomic(self.entry(row.clip_id), lambda handle, m=mean: np.save(handle, m))
                    done += 1
            progress.update(len(rows[start : start + batch_size]))
        progress.close()
        if skipped:
            write_json(self.dir / "skipped.json", skipped)
            for clip in skipped:
                log.warning("encoder features: skipped clip %s: %s", clip["clip_id"], clip["reason"])
        stored = sum(self.entry(c).is_file() for c in dataset.clips["clip_id"])
        log.info(
            "encoder feature cache %s: %d clips computed now, %d stored, %d skipped",
            self.dir,
            done,
            stored,
            len(skipped),
        )
        return {
            "computed": done,
            "stored": stored,
            "skipped": skipped,
            "dir": str(self.dir),
            "seconds": round(time.perf_counter() - started, 2),
        }

    @staticmethod
    def compute(encoder, waveforms: list[torch.Tensor], device) -> np.ndarray:
        """B x layers x hidden: each clip's per-layer means (the batch zero-padded, the padding masked out)."""
        from cremad_lit.models.speech_encoders import layer_means

        lengths = torch.tensor([len(w) for w in waveforms], device=device)
        padded = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True).to(device)
        with torch.no_grad():
            states, mask = encoder.hidden_states(padded, lengths)
        return layer_means(states, mask)
