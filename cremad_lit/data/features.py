"""Features: the model-ready form of a clip, and the settings that define it (which also key the cache).

    from cremad_lit.data.features import Preprocessing, extract_clip
    sample = extract_clip(video_path, audio_path, Preprocessing(frames=8, image_size=224))
    sample["frames"]  # (8, 224, 224, 3) uint8, face-cropped (data/faces.py) or centre-cropped, resized
    sample["mel"]     # (1, 64, 128) float16 log-Mel in dB
    sample["waveform"] # (samples,) int16 PCM at the sample rate, for speech encoders
    clip_info(sample) # {"absent": {modality: reason}, "faces": {"kind": "face", "box": [...], "found": 8, ...}}

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

import numpy as np
import torch
import torch.nn.functional as F

from cremad_lit.data import canary
from cremad_lit.data.faces import FACE_CROPS, FaceCrop, crop_faces
from cremad_lit.data.media import (
    MediaError,
    MissingModality,
    partial_reason,
    probe_video,
    read_audio,
    read_frames,
)

AUDIO_FITS = ("resize", "pad_crop")
# What a cache entry holds, in the key: 2 added the 16 kHz waveform (int16 PCM) beside the Mel image (0.6).
STORED_FORMAT = 2


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
        settings = {**self.to_dict(), "stored_format": STORED_FORMAT}
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def prepare_frames(frames: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, FaceCrop]:
    """The model's frames (face-cropped or centre square, resized) and where the crop came from."""
    return crop_faces(frames, prep.face_crop, prep.face_margin, prep.image_size)


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

    `modalities` says what to decode, and each one is required. Without it (what the cache stores) the clip gives
    whatever it has: a modality that cannot be read (a silent video, a broken audio track) is recorded in
    `info["absent"]` with its reason, so one cache serves audio-visual, audio-only and video-only runs; only a clip
    with nothing usable is an error. `info` (a JSON string in the sample) also says how the face was cropped.
    """
    required = modalities is not None
    if modalities is None:
        modalities = ("audio", "video") if video_path else ("audio",)
    if "video" in modalities and not video_path:
        raise MissingModality(
            audio_path,
            "a sound file has no faces, and this model reads faces and voice: give it the clip's video (with its "
            "sound), or use a model trained on audio alone (data.modalities=[audio], e.g. experiment=speech)",
        )
    sample, info, reasons, partial = {}, {"absent": {}}, {}, []
    if "video" in modalities:
        try:
            probed = probe_video(video_path, decoder)
            _check_duration(video_path, probed.duration, prep)
            if (
                decoder == "decord"
            ):  # decord counts the frames it can read; PyAV's header count says nothing here
                partial.append(partial_reason(video_path, probed.duration, "its frames cover"))
            frames, face = prepare_frames(read_frames(video_path, prep.frames, decoder), prep)
            sample["frames"], info["faces"] = frames, face.to_dict()
        except TooLong:
            raise
        except MediaError as error:
            if required:
                raise
            reasons["video"] = error
    if "audio" in modalities:
        try:
            audio = read_audio(video_path, audio_path, prep.audio_source, prep.sample_rate, decoder)
            _check_duration(audio_path or video_path, len(audio) / prep.sample_rate, prep)
            source = (
                audio_path if audio_path and (prep.audio_source != "video" or not video_path) else video_path
            )
            if not source.lower().endswith(
                ".wav"
            ):  # a WAV's header is checked as it is read (media.read_wav)
                partial.append(partial_reason(source, len(audio) / prep.sample_rate, "its sound lasts"))
            sample["mel"] = log_mel(audio, prep).astype(np.float16)
            sample["waveform"] = pcm16(audio)  # for speech encoders (32 kB per second)
        except TooLong:
            raise
        except MediaError as error:
            if required:
                raise
            reasons["audio"] = error
    if not sample:  # nothing usable: the clip is skipped, with every reason
        first = next(iter(reasons.values()))
        raise MediaError(first.path, "; ".join(f"{m}: {e.reason}" for m, e in reasons.items()))
    info["absent"] = {modality: error.reason for modality, error in reasons.items()}
    if any(partial):
        info["partial"] = "; ".join(reason for reason in partial if reason)
    sample["info"] = np.array(json.dumps(info))
    return sample


def decode_clip(
    video_path: str, audio_path: str, prep: Preprocessing, decoder: str = "decord", modalities=None
) -> dict:
    """`extract_clip` with its failures judged by the canary (data/canary.py): MediaError for a bad file (a damaged
    one included, whatever the decoder raised), BrokenEnvironment when known-good media fails the same way."""
    required = ("audio", "video") if video_path else ("audio",)
    return canary.guarded(
        lambda v, a: extract_clip(v, a, prep, decoder, modalities),
        video_path,
        audio_path,
        purpose=f"clip {prep.key()} {decoder} {modalities}",
        canary_decode=lambda v, a: extract_clip(v, a, prep, decoder, modalities or required),
    )


def pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def waveform_tensor(stored: np.ndarray) -> torch.Tensor:
    """A stored int16 waveform as float in [-1, 1]."""
    return torch.from_numpy(stored.astype(np.float32) / 32767.0)


def clip_info(sample: dict) -> dict:
    """The `info` of a sample or cache entry ({} for entries written before it existed)."""
    return json.loads(str(sample["info"])) if "info" in sample else {}


class TooLong(MediaError):
    """A clip over max_duration_s: left out whole, whichever modality noticed."""


def _check_duration(path: str, seconds: float, prep: Preprocessing) -> None:
    if prep.max_duration_s is not None and seconds > prep.max_duration_s:
        raise TooLong(path, f"clip is {seconds:.1f} s long, over max_duration_s={prep.max_duration_s}")


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
