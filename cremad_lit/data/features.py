"""Features: the model-ready form of a clip, and the settings that define it (which also key the cache).

    from cremad_lit.data.features import Preprocessing, extract_clip
    sample = extract_clip(video_path, audio_path, Preprocessing(frames=8, image_size=224))
    sample["frames"]  # (8, 224, 224, 3) uint8, face-cropped or centre-cropped, resized
    sample["mel"]     # (1, 64, 128) float16 log-Mel in dB

Frames are stored as uint8 and normalised at load time with the video backbone's own mean/std (see `normalise_frames`),
so one cache serves every backbone with the same input size. Paper defaults: 8 frames, 16 kHz, 64 Mel bins, FFT 1024,
dB, resized to 64x128.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cremad_lit.data.media import MediaError, probe_video, read_audio, read_frames

FACE_CROPS = ("none", "haar")
AUDIO_FITS = ("resize", "pad_crop")


@dataclass(frozen=True)
class Preprocessing:
    """Everything that changes the stored tensors of a clip. Its `key()` names the cache folder."""

    frames: int = 8
    image_size: int = 224
    face_crop: str = "none"
    face_margin: float = 0.35
    audio_source: str = "auto"
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 1024
    hop_length: int = 512
    mel_width: int = 128
    audio_fit: str = "resize"
    max_duration_s: float | None = 10.0

    def __post_init__(self):
        if self.face_crop not in FACE_CROPS:
            raise ValueError(f"face_crop must be one of {FACE_CROPS}, not {self.face_crop!r}")
        if self.audio_fit not in AUDIO_FITS:
            raise ValueError(f"audio_fit must be one of {AUDIO_FITS}, not {self.audio_fit!r}")
        if self.frames < 1 or self.image_size < 8:
            raise ValueError("frames must be >= 1 and image_size >= 8")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def centre_box(height: int, width: int) -> tuple[int, int, int]:
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


@lru_cache(maxsize=1)
def _face_detector() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise RuntimeError(
            f"OpenCV's Haar cascade is missing at {path} (opencv-python-headless 5 dropped it; use <5)"
        )
    return detector


def detect_face_box(frames: np.ndarray, margin: float) -> tuple[int, int, int] | None:
    """One square box (x, y, side) around the face over all frames: the median of per-frame detections, widened."""
    height, width = frames.shape[1:3]
    scale = 2 if width >= 320 else 1
    boxes = []
    for frame in frames:
        gray = cv2.cvtColor(frame[::scale, ::scale], cv2.COLOR_RGB2GRAY)
        found = _face_detector().detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(24 // scale, 24 // scale)
        )
        if len(found):
            boxes.append(max(found, key=lambda b: b[2] * b[3]) * scale)
    if not boxes:
        return None
    x, y, w, h = np.median(np.array(boxes), axis=0)
    side = min(int(max(w, h) * (1 + 2 * margin)), height, width)
    cx, cy = x + w / 2, y + h / 2
    left = int(np.clip(cx - side / 2, 0, width - side))
    top = int(np.clip(cy - side / 2, 0, height - side))
    return left, top, side


def crop_and_resize(frames: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    left, top, side = box
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return np.stack(
        [
            cv2.resize(f[top : top + side, left : left + side], (size, size), interpolation=interpolation)
            for f in frames
        ]
    )


def prepare_frames(frames: np.ndarray, prep: Preprocessing) -> np.ndarray:
    box = detect_face_box(frames, prep.face_margin) if prep.face_crop == "haar" else None
    if box is None:  # no face found, or face_crop=none: the centred square
        box = centre_box(*frames.shape[1:3])
    return crop_and_resize(frames, box, prep.image_size)


@lru_cache(maxsize=4)
def _mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> torch.nn.Module:
    import torchaudio.transforms as T

    return torch.nn.Sequential(
        T.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels),
        T.AmplitudeToDB(stype="power", top_db=80.0),
    )


def log_mel(audio: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(1, n_mels, mel_width) float32 log-Mel in dB, stretched (`resize`) or padded/centre-cropped (`pad_crop`) in time."""
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if waveform.numel() < prep.n_fft:
        waveform = F.pad(waveform, (0, prep.n_fft - waveform.numel()))
    with torch.no_grad():
        mel = _mel_transform(prep.sample_rate, prep.n_fft, prep.hop_length, prep.n_mels)(waveform)[None]
        if prep.audio_fit == "resize":
            mel = F.interpolate(
                mel[None], size=(prep.n_mels, prep.mel_width), mode="bilinear", align_corners=False
            )[0]
        else:
            excess = mel.shape[-1] - prep.mel_width
            if excess >= 0:
                mel = mel[..., excess // 2 : excess // 2 + prep.mel_width]
            else:
                mel = F.pad(mel, (0, -excess), value=float(mel.min()))
    return mel.numpy()


def extract_clip(
    video_path: str, audio_path: str, prep: Preprocessing, decoder: str = "decord", modalities=None
) -> dict:
    """Decode and featurise one clip; raises MediaError (with path and reason) for anything unusable.

    `modalities` says what to decode; by default everything the clip has (an audio-only clip has `video_path == ""`),
    which is what the cache stores, so audio-visual, audio-only and video-only runs share one cache.
    """
    if modalities is None:
        modalities = ("audio", "video") if video_path else ("audio",)
    if "video" in modalities and not video_path:
        raise MediaError(audio_path, "no video file for this clip, but video was asked for")
    if video_path:
        _check_duration(video_path, probe_video(video_path, decoder).duration, prep)
    sample = {}
    if "video" in modalities:
        sample["frames"] = prepare_frames(read_frames(video_path, prep.frames, decoder), prep)
    if "audio" in modalities:
        audio = read_audio(video_path, audio_path, prep.audio_source, prep.sample_rate, decoder)
        if not video_path:
            _check_duration(audio_path, len(audio) / prep.sample_rate, prep)
        sample["mel"] = log_mel(audio, prep).astype(np.float16)
    return sample


def _check_duration(path: str, seconds: float, prep: Preprocessing) -> None:
    if prep.max_duration_s is not None and seconds > prep.max_duration_s:
        raise MediaError(path, f"clip is {seconds:.1f} s long, over max_duration_s={prep.max_duration_s}")


def normalise_frames(frames: torch.Tensor, mean, std) -> torch.Tensor:
    """(..., T, H, W, 3) uint8 -> (..., T, 3, H, W) float, standardised with the backbone's mean/std.

    The channel move happens on the uint8 data and the arithmetic in place: the hot path of cached loading.
    """
    x = frames.movedim(-1, -3).contiguous().float()
    mean = torch.as_tensor(mean, dtype=x.dtype).view(3, 1, 1) * 255.0
    scale = 1.0 / (torch.as_tensor(std, dtype=x.dtype).view(3, 1, 1) * 255.0)
    return x.sub_(mean).mul_(scale)


# dB values of speech at 16 kHz with these settings span roughly -65..+35 (real CREMA-D clips); this centres them near 0 with unit-ish scale
# while keeping loudness (an emotion cue) instead of standardising each clip away.
MEL_DB_MEAN, MEL_DB_STD = -20.0, 20.0


def normalise_mel(mel: torch.Tensor) -> torch.Tensor:
    return (mel.float() - MEL_DB_MEAN) / MEL_DB_STD
