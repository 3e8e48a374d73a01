"""The generator writes real media that decord and PyAV read back as requested; it is deterministic."""

from __future__ import annotations

import wave

import av
import decord
import numpy as np
import pytest

from cremad_lit.data.synthetic import FACE_CODES, VOICE_CODES, generate


def test_official_layout_media_read_back(synthetic_root):
    flvs = sorted((synthetic_root / "VideoFlash").glob("*.flv"))
    wavs = sorted((synthetic_root / "AudioWAV").glob("*.wav"))
    assert len(flvs) == len(wavs) == 96
    assert (synthetic_root / "VideoDemographics.csv").read_text().startswith("ActorID,Age,Sex,Race,Ethnicity")
    for path in flvs[:3]:
        reader = decord.VideoReader(str(path))
        assert reader[0].shape == (360, 480, 3)
        assert abs(reader.get_avg_fps() - 29.97) < 0.05
        duration = len(reader) / reader.get_avg_fps()
        assert 1.9 <= duration <= 3.1
        with av.open(str(path)) as container:
            assert container.format.name == "flv"
            assert container.streams.video[0].codec_context.name == "flv"
            audio = container.streams.audio[0]
            assert audio.codec_context.name in ("mp3", "mp3float") and audio.rate == 44100
            decoded = sum(f.samples for f in container.decode(audio))
            assert abs(decoded / 44100 - duration) < 0.2  # the audio track spans the video
        sound = decord.AudioReader(str(path), sample_rate=16000, mono=True)
        assert abs(sound.shape[1] / 16000 - duration) < 0.2
        with wave.open(str(synthetic_root / "AudioWAV" / f"{path.stem}.wav")) as handle:
            assert (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (16000, 1, 2)
            assert abs(handle.getnframes() / 16000 - duration) < 0.1


def test_kaggle_layout_is_h264_aac_with_gender_suffix(kaggle_root):
    files = sorted(kaggle_root.glob("*.mp4"))
    assert len(files) == 32 and not list(kaggle_root.glob("*.wav"))
    assert {f.stem[-3:] for f in files} == {"_01", "_02"}
    with av.open(str(files[0])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    assert len(decord.VideoReader(str(files[0]))) > 50


def test_same_seed_same_data(tmp_path):
    first = generate(tmp_path / "a", actors=1, sentences=1, seed=3, workers=1)
    second = generate(tmp_path / "b", actors=1, sentences=1, seed=3, workers=1)
    other = generate(tmp_path / "c", actors=1, sentences=1, seed=4, workers=1)
    name = "AudioWAV/1001_IEO_FEA_HI.wav"
    assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / name).read_bytes() != (other / name).read_bytes()
    frames = [
        decord.VideoReader(str(root / "VideoFlash/1001_IEO_FEA_HI.flv")).get_batch([10, 40]).asnumpy()
        for root in (first, second)
    ]
    assert np.array_equal(*frames)


def test_generation_resumes_without_rewriting(tmp_path):
    root = generate(tmp_path / "d", actors=1, sentences=1, seed=0, workers=1)
    target = root / "VideoFlash" / "1001_IEO_ANG_HI.flv"
    stamp = target.stat().st_mtime_ns
    (root / "VideoFlash" / "1001_IEO_SAD_LO.flv").unlink()
    generate(root, actors=1, sentences=1, seed=0, workers=1)
    assert target.stat().st_mtime_ns == stamp and (root / "VideoFlash" / "1001_IEO_SAD_LO.flv").is_file()


def test_design_needs_both_modalities():
    """Each modality alone confuses two pairs of emotions; together every emotion is unique."""
    pairs = {(FACE_CODES[e], VOICE_CODES[e]) for e in FACE_CODES}
    assert len(pairs) == 6
    assert len(set(FACE_CODES.values())) == 4 and len(set(VOICE_CODES.values())) == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        generate("/tmp/never", layout="zip")


def test_the_module_run_as_a_command_writes_the_set(tmp_path):
    """`python -m cremad_lit.data.synthetic` (the README's way to make a folder of it): its workers find the job by
    name, though they do not import the command's main module (data/isolation.py)."""
    from tests.conftest import run_cli

    result = run_cli(
        "-m", "cremad_lit.data.synthetic", "--out", str(tmp_path / "set"), "--actors", "1", "--sentences", "1"
    )
    assert "synthetic CREMA-D written to" in result.stdout
    assert len(list((tmp_path / "set" / "VideoFlash").glob("*.flv"))) == 16
