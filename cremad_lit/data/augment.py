"""Train-time augmentation of one clip's frames and Mel image (conf/data/*.yaml `augment:`).

from cremad_lit.data.augment import Augment
Augment(masks=2, gain_db=6.0, freq_warp=0.1).mel(mel)      # what experiment=speech trains with
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cremad_lit.data.features import MEL_DB_STD


class Augment:
    """Train-time augmentation: for frames (the same for every frame of a clip) a flip and a small random resized
    crop; for the Mel image `masks` SpecAugment frequency and time masks and a random circular time shift."""

    def __init__(
        self,
        hflip: float = 0.5,
        crop_scale: float = 0.85,
        freq_mask: int = 8,
        time_mask: int = 16,
        masks: int = 1,
        time_shift: int = 0,
        gain_db: float = 0.0,
        freq_warp: float = 0.0,
        time_warp: float = 0.0,
    ):
        import torchaudio.transforms as T
        from torchvision.transforms import v2

        self.hflip = hflip
        self.crop_scale = crop_scale
        self._crop_type = v2.RandomResizedCrop
        # One crop transform per frame size, built on first use rather than for every clip.
        self._crops: dict[tuple[int, int], torch.nn.Module] = {}
        self.time_shift = time_shift
        self.gain_db, self.freq_warp, self.time_warp = gain_db, freq_warp, time_warp
        self.spec = (
            torch.nn.Sequential(*[T.FrequencyMasking(freq_mask), T.TimeMasking(time_mask)] * masks)
            if (freq_mask or time_mask) and masks > 0
            else None
        )

    def changes_frames(self) -> bool:
        """Whether training frames differ from the prepared ones (a frozen video encoder's cache holds the latter)."""
        return self.hflip > 0 or self.crop_scale < 1

    def frames(self, frames: torch.Tensor) -> torch.Tensor:  # T x 3 x H x W
        if torch.rand(()) < self.hflip:
            frames = frames.flip(-1)
        if self.crop_scale < 1:
            size = tuple(frames.shape[-2:])
            if size not in self._crops:
                self._crops[size] = self._crop_type(size, scale=(self.crop_scale, 1.0), antialias=True)
            frames = self._crops[size](frames)
        return frames

    def mel(self, mel: torch.Tensor) -> torch.Tensor:  # 1 x F x W, normalised dB
        if self.gain_db:
            mel = mel + float(torch.empty(()).uniform_(-self.gain_db, self.gain_db)) / MEL_DB_STD
        if self.freq_warp or self.time_warp:
            mel = stretch(mel, _factor(self.freq_warp), _factor(self.time_warp))
        if self.time_shift:
            mel = mel.roll(int(torch.randint(-self.time_shift, self.time_shift + 1, ())), dims=-1)
        return self.spec(mel) if self.spec is not None else mel


def _factor(amount: float) -> float:
    return float(torch.empty(()).uniform_(1 - amount, 1 + amount)) if amount else 1.0


def stretch(mel: torch.Tensor, freq: float, time: float) -> torch.Tensor:
    """Stretch a 1 x F x W image by these factors, then crop or edge-pad it back to F x W (low bands and onset kept)."""
    bands, width = mel.shape[-2:]
    size = (max(1, round(bands * freq)), max(1, round(width * time)))
    resized = F.interpolate(mel[None], size=size, mode="bilinear", align_corners=False)[0]
    resized = resized[..., :bands, :width]
    pad = (0, width - resized.shape[-1], 0, bands - resized.shape[-2])
    return F.pad(resized[None], pad, mode="replicate")[0] if any(pad) else resized
