"""Checkpoint safety: atomic writes, and random-number state so a resumed run continues exactly where it stopped.

    python train.py ...                          # Trainer(plugins=[AtomicCheckpointIO()]) is set up by training.py

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over the old one, so a
kill during a save leaves the previous `last.ckpt` whole. Only tensors and plain data are stored (`weights_only` loads).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cremad_lit.io import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        write_atomic(path, lambda handle: torch.save(checkpoint, handle), durable=True)


def rng_state() -> dict:
    """Python, NumPy and torch generator states as tensors and plain data (safe for weights_only loading)."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
