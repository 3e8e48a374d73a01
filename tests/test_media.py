"""Decoding real CREMA-D flv files with both backends, and every kind of bad media, each on a real file."""

from __future__ import annotations

import json
import wave

import av
import numpy as np
import pytest

from cremad_lit.data.cache import ClipCache
from cremad_lit.data.catalog import build_catalog
from cremad_lit.data.features import Preprocessing, extract_clip
from cremad_lit.data.media import (
    MediaError,
    frame_indices,
    read_audio,
    read_frames,
    read_video_audio,
    read_wav,
)
from cremad_lit.data.synthetic import Clip, encode_video, make_actors, render_frames, synthesize_voice
from tests.conftest import SAMPLE_FLVS


@pytest.mark.parametrize("path", SAMPLE_FLVS, ids=lambda p: p.stem)
def test_real_flv_decodes_the_same_with_decord_and_pyav(path):
    by_decord = read_frames(str(path), 8, "decord")
    by_pyav = read_frames(str(path), 8, "pyav")
    assert by_decord.shape == by_pyav.shape == (8, 360, 480, 3)
    assert by_decord.dtype == np.uint8
    assert (
        np.abs(by_decord.astype(int) - by_pyav).mean() < 1.0
    )  # same frames (colour conversion may differ by 1)
    assert by_decord[0].std() > 10  # a real picture, not a blank frame
    audio = read_video_audio(str(path), 16000, "decord")
    assert 1.5 < len(audio) / 16000 < 3.0 and np.abs(audio).max() > 0.05
    assert abs(len(read_video_audio(str(path), 16000, "pyav")) - len(audio)) < 1600


def test_real_wav_reads_at_16k(samples_dir):
    audio = read_wav(str(samples_dir / "AudioWAV" / "1001_DFA_ANG_XX.wav"))
    assert audio.dtype == np.float32 and 1.5 < len(audio) / 16000 < 3.5


def test_frame_indices_are_equal_interval_centres():
    assert frame_indices(80, 8).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert frame_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


# -- bad media ------------------------------------------------------------------------------------------------------


def _clip(actor, emotion="ANG", statement="DFA"):
    return Clip(actor, statement, emotion, "XX", seed=7)


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, samples_dir):
    """Good clips plus one real file of each kind of bad media, in the official layout."""
    root = tmp_path_factory.mktemp("bad-media")
    video, audio_dir = root / "VideoFlash", root / "AudioWAV"
    video.mkdir()
    audio_dir.mkdir()
    actors = make_actors(6, np.random.default_rng(0))
    rng = np.random.default_rng(0)

    def write(stem, actor, emotion, seconds=2.0, with_audio=True, wav=True):
        clip = _clip(actor, emotion)
        frames = render_frames(clip, seconds, rng)
        voice = synthesize_voice(clip, seconds, 44100, rng) if with_audio else None
        encode_video(video / f"{stem}.flv", frames, voice, "flv")
        if wav:
            samples = (synthesize_voice(clip, seconds, 16000, rng) * 32767).astype("<i2")
            with wave.open(str(audio_dir / f"{stem}.wav"), "wb") as handle:
                (
                    handle.setnchannels(1),
                    handle.setsampwidth(2),
                    handle.setframerate(16000),
                    handle.writeframes(samples.tobytes()),
                )

    for actor in actors:  # every actor gets good clips, so any split works
        for emotion in ("DIS", "HAP"):
            write(f"{actor.actor_id}_DFA_{emotion}_XX", actor, emotion)
    real = (samples_dir / "VideoFlash" / "1001_DFA_ANG_XX.flv").read_bytes()
    (video / "1001_TIE_ANG_XX.flv").write_bytes(
        real[:2048]
    )  # truncated: the header survives, the streams do not
    (video / "1001_IEO_ANG_HI.flv").write_bytes(
        real[: len(real) // 3]
    )  # truncated, but a third still decodes
    (video / "1002_TIE_ANG_XX.flv").write_bytes(
        b"definitely not a video " * 400
    )  # not video under a video name
    with av.open(
        str(video / "1002_TIE_SAD_XX.flv"), "w", format="flv"
    ) as container:  # zero duration: header only
        stream = container.add_stream("flv", rate=30)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        container.start_encoding()
        container.mux(stream.encode())
    write("1003_TIE_NEU_XX", actors[2], "NEU", with_audio=False, wav=False)  # no audio track, no WAV
    write("1003_TIE_SAD_XX", actors[2], "SAD", with_audio=False, wav=True)  # no audio track, but a WAV
    write("1004_TIE_FEA_XX", actors[3], "FEA", with_audio=True, wav=True)
    with wave.open(
        str(audio_dir / "1004_TIE_FEA_XX.wav"), "wb"
    ) as handle:  # zero-length WAV beside a good video
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
    write("1005_IEO_DIS_MD", actors[4], "DIS", seconds=12.0)  # far longer than the rest
    return root


BAD = {
    "1001_TIE_ANG_XX": "cannot open as video",
    "1002_TIE_ANG_XX": "cannot open as video",
    "1002_TIE_SAD_XX": "cannot open as video",
    "1005_IEO_DIS_MD": "over max_duration_s",
}
SILENT = "1003_TIE_NEU_XX"  # no audio track and no WAV: kept for video-only runs, left out of the others


def test_each_bad_clip_is_reported_with_path_and_reason(bad_root, tmp_path):
    clips = build_catalog(bad_root)
    cache = ClipCache(tmp_path, Preprocessing(frames=4, image_size=32))
    report = cache.build(clips, workers=0)
    skipped = {row["clip_id"]: row for row in report["skipped"]}
    assert set(skipped) == set(BAD)
    for clip_id, reason in BAD.items():
        assert reason in skipped[clip_id]["reason"]
        assert skipped[clip_id]["path"].endswith(f"{clip_id}.flv")
    assert "audio" in skipped["1002_TIE_SAD_XX"]["reason"]  # each modality's reason when none is usable
    assert json.loads(cache.skipped_file.read_text()) == sorted(report["skipped"], key=lambda r: r["clip_id"])
    [silent] = report["absent"]
    assert silent["clip_id"] == SILENT and silent["modality"] == "audio" and "audio" in silent["reason"]
    assert [r["clip_id"] for r in cache.lacking(clips, ("audio", "video"))] == [SILENT]
    assert cache.lacking(clips, ("video",)) == []
    assert set(cache.load(SILENT)) == {"frames", "info"}
    for clip_id in set(clips["clip_id"]) - set(BAD) - {SILENT}:
        stored = cache.load(clip_id)
        assert stored["frames"].shape == (4, 32, 32, 3) and stored["mel"].shape == (1, 64, 128)


def test_missing_audio_track_uses_the_wav(bad_root):
    prep = Preprocessing(frames=2, image_size=32)
    sample = extract_clip(
        str(bad_root / "VideoFlash/1003_TIE_SAD_XX.flv"), str(bad_root / "AudioWAV/1003_TIE_SAD_XX.wav"), prep
    )
    assert sample["mel"].shape == (1, 64, 128) and float(sample["mel"].astype(np.float32).std()) > 1
    with pytest.raises(MediaError, match="no audio track|no readable audio"):
        read_audio(str(bad_root / "VideoFlash/1003_TIE_SAD_XX.flv"), source="video")


def test_zero_length_wav_falls_back_to_the_video_track_or_fails_clearly(bad_root):
    video, wav = (
        str(bad_root / "VideoFlash/1004_TIE_FEA_XX.flv"),
        str(bad_root / "AudioWAV/1004_TIE_FEA_XX.wav"),
    )
    assert len(read_audio(video, wav, source="auto")) > 16000
    with pytest.raises(MediaError, match="WAV holds no samples") as error:
        read_audio(video, wav, source="wav")
    assert error.value.path == wav


def test_a_cache_only_run_of_a_bad_tree_finishes_an_epoch(bad_root, tmp_path):
    """On-the-fly decoding (no cache): bad clips are dropped from their batch, the epoch completes."""

    from cremad_lit.data.datamodule import EmotionDataModule

    datamodule = EmotionDataModule.from_config(
        dict(
            root=str(bad_root),
            preprocessing={"frames": 2, "image_size": 32},
            cache="off",
            batch_size=4,
            split={"seed": 0},
        )
    )
    datamodule.setup("fit")
    seen = []
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule.test_dataloader()):
        for batch in loader:
            if batch is not None:
                assert batch["frames"].shape[1:] == (2, 3, 32, 32)
                seen.extend(batch["clip_id"])
    unusable = set(BAD) | {SILENT}  # an audio-visual run cannot use the silent clip either
    assert unusable.isdisjoint(seen)
    assert len(seen) == len(datamodule.clips) - len(unusable & set(datamodule.clips["clip_id"]))


def test_missing_file_is_a_media_error(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        read_frames(str(tmp_path / "gone.flv"), 8)
    empty = tmp_path / "empty.flv"
    empty.touch()
    with pytest.raises(MediaError, match="empty"):
        read_frames(str(empty), 8)


def test_unknown_decoder_is_rejected(samples_dir):
    with pytest.raises(ValueError, match="decoder"):
        read_frames(str(SAMPLE_FLVS[0]), 8, "opencv")
