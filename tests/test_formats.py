"""Every format a user may hand predict, the page or a manifest (data/media.py: AUDIO_FILES, VIDEO_FILES), made here
from real media by PyAV's encoders and read back by the real decoders: a RAVDESS take as WAV, FLAC, MP3, OGG/Opus,
M4A/AAC and ADTS AAC; a CREMA-D clip's frames and sound as FLV, MP4, AVI, MKV, WebM and MOV.

    .venv/bin/python -m pytest tests/test_formats.py
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cremad_lit.data.media import (
    AUDIO_FILES,
    VIDEO_FILES,
    read_audio,
    read_frames,
    read_video_audio,
    read_wav,
)
from tests.conftest import SAMPLE_FLVS

# extension -> (container format, audio codec, its sample rate); video: (+ video codec)
AUDIO = {
    ".wav": ("wav", "pcm_s16le", 16000),
    ".flac": ("flac", "flac", 16000),
    ".mp3": ("mp3", "libmp3lame", 16000),
    ".ogg": ("ogg", "libopus", 48000),
    ".opus": ("opus", "libopus", 48000),
    ".m4a": ("ipod", "aac", 16000),
    ".aac": ("adts", "aac", 16000),
}
VIDEO = {
    ".flv": ("flv", "flv", "libmp3lame", 44100),
    ".mp4": ("mp4", "libx264", "aac", 44100),
    ".avi": ("avi", "mpeg4", "libmp3lame", 44100),
    ".mkv": ("matroska", "libx264", "libopus", 48000),
    ".webm": ("webm", "libvpx-vp9", "libopus", 48000),
    ".mov": ("mov", "libx264", "aac", 44100),
}


def encode_audio(stream, samples: np.ndarray, rate: int, container) -> None:
    """Mono float samples at `rate` through the stream's encoder (resampled to its rate and sample format)."""
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=stream.rate)
    frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    size = stream.codec_context.frame_size or 1024
    pending = [f for f in resampler.resample(frame)] + [f for f in resampler.resample(None)]
    buffered = np.concatenate([f.to_ndarray().reshape(f.to_ndarray().shape[0], -1) for f in pending], axis=1)
    for start in range(0, buffered.shape[1], size):
        piece = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(buffered[:, start : start + size]),
            format=stream.codec_context.format.name,
            layout="mono",
        )
        piece.sample_rate, piece.pts = stream.rate, start
        container.mux(stream.encode(piece))
    container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def speech(ravdess_dir) -> np.ndarray:
    return read_wav(str(sorted((ravdess_dir / "Actor_02").glob("*.wav"))[0]))


@pytest.fixture(scope="module")
def audio_files(speech, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    made = {}
    for extension, (container_format, codec, rate) in AUDIO.items():
        path = folder / f"take{extension}"
        with av.open(str(path), "w", format=container_format) as container:
            encode_audio(container.add_stream(codec, rate=rate, layout="mono"), speech, 16000, container)
        made[extension] = path
    return made


@pytest.fixture(scope="module")
def video_files(tmp_path_factory) -> dict[str, Path]:
    source = str(SAMPLE_FLVS[0])
    frames = read_frames(source, 24, "pyav")
    sound = read_video_audio(source, 44100, "pyav")
    folder = tmp_path_factory.mktemp("video")
    made = {}
    for extension, (container_format, video_codec, audio_codec, rate) in VIDEO.items():
        path = folder / f"clip{extension}"
        with av.open(str(path), "w", format=container_format) as container:
            video = container.add_stream(video_codec, rate=12)
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            audio = container.add_stream(audio_codec, rate=rate, layout="mono")
            for array in frames:
                container.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            container.mux(video.encode(None))
            encode_audio(audio, sound, 44100, container)
        made[extension] = path
    return made


def test_the_lists_are_what_is_tested():
    assert set(AUDIO) == set(AUDIO_FILES) and set(VIDEO) == set(VIDEO_FILES)


def test_every_audio_format_reads_back_as_the_take(audio_files, speech):
    """Each file's sound, at 16 kHz, lasts as long as the take (codec padding aside) and carries its loudness."""
    for extension, path in audio_files.items():
        decoded = read_audio("", str(path), sample_rate=16000)
        assert abs(len(decoded) - len(speech)) < 0.12 * 16000, extension
        assert np.sqrt(np.mean(decoded**2)) == pytest.approx(np.sqrt(np.mean(speech**2)), rel=0.15), extension


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_every_video_format_reads_back_as_the_clip(video_files, decoder):
    """Each container's frames (8 at equal intervals) look like the real clip's, and its sound lasts as long."""
    reference = read_frames(str(video_files[".flv"]), 8, "pyav").astype(float)
    seconds = len(read_video_audio(str(SAMPLE_FLVS[0]), 16000, "pyav")) / 16000
    for extension, path in video_files.items():
        frames = read_frames(str(path), 8, decoder)
        assert frames.shape == reference.shape, extension
        assert np.abs(frames.astype(float) - reference).mean() < 12, (
            extension
        )  # lossy codecs, the same picture
        sound = read_video_audio(str(path), 16000, decoder)
        assert abs(len(sound) / 16000 - seconds) < 0.12, extension


def test_predict_reads_every_format(audio_files, video_files):
    """Through predict: an audio-only model reads every sound file and every video's track; an audio-visual model
    every video (and says of each sound file that it has no faces)."""
    from cremad_lit.predictors.files import predict_files
    from tests.conftest import TINY, tiny_module

    audio_only, audio_cfg = tiny_module([*TINY, "data.modalities=[audio]"])
    rows = predict_files(
        audio_only, audio_cfg, [*audio_files.values(), *video_files.values()], speaker="file"
    )
    assert [r.get("error") for r in rows] == [None] * len(rows)
    both, both_cfg = tiny_module(TINY)
    rows = predict_files(both, both_cfg, [*video_files.values(), audio_files[".flac"]], speaker="file")
    assert all("probabilities" in r for r in rows[:-1]) and "has no faces" in rows[-1]["error"]
    unknown = audio_files[".wav"].with_suffix(".txt")
    unknown.write_bytes(audio_files[".wav"].read_bytes())
    [row] = predict_files(audio_only, audio_cfg, [unknown], speaker="file")
    assert row["error"].startswith("unknown format .txt: sound as .wav, .flac")
