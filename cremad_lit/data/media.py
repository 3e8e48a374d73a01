"""Decoding: equally spaced video frames and 16 kHz mono audio, from decord or PyAV.

    from cremad_lit.data.media import read_frames, read_audio
    frames = read_frames("1001_DFA_ANG_XX.flv", num_frames=8)          # (8, 360, 480, 3) uint8 RGB
    audio = read_audio("1001_DFA_ANG_XX.flv", sample_rate=16000)       # float32 mono in [-1, 1]

Real CREMA-D flv files have a data stream first, MP3 audio and On2 VP6 video, and cannot seek: PyAV therefore decodes
the clip once from the start (cheap: clips are ~2 s). Any failure is raised as MediaError naming the file and reason.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DECODERS = ("decord", "pyav")


class MediaError(RuntimeError):
    """A clip that cannot be used, with the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class MissingModality(MediaError):
    """The clip's files lack a modality the model reads (a sound file given to a model that reads faces): the user's
    input, known before anything is decoded, so no canary is asked and the environment is never blamed."""


# What a user may hand predict, the page or a manifest: sound alone (WAV by the wave module, the rest through PyAV's
# FFmpeg) or a video (frames by decord or PyAV, its sound track by either). A corpus adapter scans its own.
AUDIO_FILES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
VIDEO_FILES = (".flv", ".mp4", ".avi", ".mkv", ".webm", ".mov")
MEDIA_FILES = VIDEO_FILES + AUDIO_FILES


def media_paths(path: str | os.PathLike) -> tuple[str, str]:
    """(video_path, audio_path) of a file a user hands in, by its kind; MediaError for a format not read here."""
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_FILES or suffix in VIDEO_FILES:
        return ("", str(path)) if suffix in AUDIO_FILES else (str(path), "")
    raise MediaError(
        path,
        f"unknown format {suffix or '(no extension)'}: sound as {', '.join(AUDIO_FILES)}; video as "
        f"{', '.join(VIDEO_FILES)}",
    )


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """Centres of `num_frames` equal segments of the clip (repeats frames when the clip is shorter)."""
    return (
        ((np.arange(num_frames) + 0.5) * num_available / num_frames)
        .astype(np.int64)
        .clip(0, num_available - 1)
    )


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise MediaError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "file is empty (0 bytes)")


def _decord_reader(path: str):
    import decord

    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except Exception as error:  # decord raises its own DECORDError for every kind of bad input
        raise MediaError(
            path, f"cannot open as video ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        ) from error


def probe_video(path: str, decoder: str = "decord") -> VideoInfo:
    """Frame count and frame rate, without decoding pixels (decord) or from the stream header (PyAV)."""
    _check_file(path)
    if decoder == "decord":
        reader = _decord_reader(path)
        return VideoInfo(len(reader), float(reader.get_avg_fps() or 0.0))
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = float(container.duration or 0) / 1e6
            return VideoInfo(int(stream.frames or round(duration * fps)), fps)
    except av.FFmpegError as error:
        raise MediaError(path, f"cannot open as video ({error})") from error


# Decoded less than this share of what a file's header declares: cut short (a download, a copy).
PARTIAL_SHARE = 0.9
PARTIAL_SLACK_S = 0.1  # containers round their declared duration; a few frames' difference is not a cut


def declared_seconds(path: str) -> float | None:
    """How long the container's header says the file is (FLV metadata, MP4 moov, FLAC STREAMINFO), or None."""
    import av

    try:
        with av.open(path) as container:
            return float(container.duration) / 1e6 if container.duration else None
    except (av.FFmpegError, OSError):
        return None


def partial_reason(path: str, decoded_s: float, what: str) -> str | None:
    """Why a decode looks partial (the file holds less than its header declares), or None."""
    declared = declared_seconds(path)
    if declared is None or decoded_s >= PARTIAL_SHARE * declared - PARTIAL_SLACK_S:
        return None
    return f"partial: {what} {decoded_s:.2f} s of the {declared:.2f} s the file declares (cut short?)"


def read_frames(path: str, num_frames: int, decoder: str = "decord") -> np.ndarray:
    """`num_frames` RGB frames at equal intervals over the whole clip, as (T, H, W, 3) uint8."""
    _check_file(path)
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
    if decoder == "decord":
        reader = _decord_reader(path)
        if len(reader) == 0:
            raise MediaError(path, "no video frames (zero duration)")
        try:
            return reader.get_batch(frame_indices(len(reader), num_frames).tolist()).asnumpy()
        except Exception as error:
            raise MediaError(
                path, f"video decoding failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
            ) from error
    return _read_frames_pyav(path, num_frames)


def _read_frames_pyav(path: str, num_frames: int) -> np.ndarray:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoded = list(container.decode(stream))
    except av.FFmpegError as error:
        raise MediaError(path, f"video decoding failed ({error})") from error
    if not decoded:
        raise MediaError(path, "no video frames (zero duration)")
    return np.stack([decoded[i].to_ndarray(format="rgb24") for i in frame_indices(len(decoded), num_frames)])


def read_wav(path: str, sample_rate: int = 16000) -> np.ndarray:
    """A PCM WAV as float32 mono at `sample_rate` (other encodings go through PyAV)."""
    _check_file(path)
    try:
        with wave.open(path, "rb") as handle:
            if handle.getsampwidth() != 2:
                raise wave.Error("not 16-bit PCM")
            rate, channels = handle.getframerate(), handle.getnchannels()
            declared = handle.getnframes()
            data = handle.readframes(declared)
    except (
        wave.Error,
        EOFError,
        RuntimeError,
    ):  # the wave module raises a bare RuntimeError on a damaged chunk
        return _read_audio_pyav(path, sample_rate)
    if not (
        1 <= channels <= 64 and 1000 <= rate <= 384000
    ):  # a damaged header (resampling from it could hang)
        raise MediaError(path, f"WAV header is damaged ({channels} channels at {rate} Hz)")
    if len(data) < declared * 2 * channels:  # cut short: a paired video's own track is the better source
        raise MediaError(
            path,
            f"WAV is truncated: its header declares {declared} frames, the file holds {len(data) // (2 * channels)}",
        )
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if samples.size == 0:
        raise MediaError(path, "WAV holds no samples")
    samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        samples = AF.resample(torch.from_numpy(samples), rate, sample_rate).numpy()
    return samples


def _read_audio_pyav(path: str, sample_rate: int) -> np.ndarray:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio track")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            try:
                for frame in container.decode(container.streams.audio[0]):
                    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            except av.FFmpegError:
                if not chunks:
                    raise
                # A cut-short or damaged end: what decoded is kept, and extract_clip flags the clip as partial.
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except av.FFmpegError as error:
        raise MediaError(path, f"audio decoding failed ({error})") from error
    if not chunks or sum(c.size for c in chunks) == 0:
        raise MediaError(path, "audio track holds no samples")
    return np.concatenate(chunks).astype(np.float32)


def read_video_audio(path: str, sample_rate: int = 16000, decoder: str = "decord") -> np.ndarray:
    """The audio track of a video file, resampled to `sample_rate` mono float32."""
    _check_file(path)
    if decoder == "decord":
        import decord

        try:
            reader = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
            samples = reader[:].asnumpy().reshape(-1).astype(np.float32)
        except Exception as error:
            # decord reports a missing audio track as a generic error: ask PyAV, whose reason is precise.
            try:
                return _read_audio_pyav(path, sample_rate)
            except MediaError:
                raise
            except Exception:
                raise MediaError(
                    path, f"no readable audio track ({str(error).splitlines()[0][:200]})"
                ) from error
        if samples.size == 0:
            raise MediaError(path, "audio track holds no samples")
        return samples
    return _read_audio_pyav(path, sample_rate)


def read_audio(
    video_path: str,
    audio_path: str = "",
    source: str = "auto",
    sample_rate: int = 16000,
    decoder: str = "decord",
) -> np.ndarray:
    """Audio of a clip: the paired WAV (`wav`), the video's track (`video`), or the WAV when there is one (`auto`)."""
    if source not in ("auto", "wav", "video"):
        raise ValueError(f"audio_source must be auto, wav or video, not {source!r}")
    if not video_path:  # an audio-only clip: its file is all there is
        return read_wav(audio_path, sample_rate)
    if source == "video" or (source == "auto" and not audio_path):
        return read_video_audio(video_path, sample_rate, decoder)
    if not audio_path:
        raise MediaError(video_path, "audio_source=wav but the clip has no paired WAV")
    try:
        return read_wav(audio_path, sample_rate)
    except MediaError as wav_error:
        if source == "wav":
            raise
        try:
            return read_video_audio(video_path, sample_rate, decoder)
        except MediaError as video_error:
            raise MediaError(
                video_path, f"{wav_error.reason} in {audio_path}, and {video_error.reason} in the video"
            ) from video_error
