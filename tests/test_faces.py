"""Real faces: crops checked against an independent eye detector, pre-cropped faces kept whole, fallbacks recorded,
video-only clips, RAVDESS's twin files, and the mp4's own audio against the audio-only recording of the same take."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cremad_lit.data.catalog import SAME_TAKE, build_catalog
from cremad_lit.data.datamodule import EmotionDataModule
from cremad_lit.data.faces import find_face
from cremad_lit.data.features import Preprocessing, clip_info, extract_clip, log_mel
from cremad_lit.data.media import read_frames, read_video_audio, read_wav
from cremad_lit.data.splits import make_split
from cremad_lit.plots import draw_faces
from tests.conftest import RAVDESS, SAMPLE_FLVS, SHARED, common, run_cli

AV_ACTOR05 = SHARED / "ravdess-av-actor05"
ORIGINALS = sorted((AV_ACTOR05 / "Actor_05").glob("*.mp4"))
FACE_CROPS = AV_ACTOR05 / "face-crops"
CROPPED = sorted((FACE_CROPS / "Actor_05").glob("*.avi"))


@pytest.fixture(scope="module")
def av_actor05() -> Path:
    if len(ORIGINALS) != 4 or len(CROPPED) != 120:
        pytest.skip(f"real RAVDESS face video not found at {AV_ACTOR05} (set CREMAD_LIT_SHARED)")
    return AV_ACTOR05


def eyes(crop: np.ndarray):
    """(midpoint x, midpoint y, distance) of the two eyes OpenCV's eye cascade finds, as shares of the crop side."""
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("the independent eye detector is OpenCV 4's eye cascade; this OpenCV has none")
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    found = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml").detectMultiScale(
        gray, 1.1, 5, minSize=(12, 12)
    )
    upper = sorted((e for e in found if e[1] + e[3] / 2 < 0.6 * gray.shape[0]), key=lambda e: -e[2] * e[3])
    if len(upper) < 2:
        return None
    (x1, y1), (x2, y2) = [(x + w / 2, y + h / 2) for x, y, w, h in upper[:2]]
    side = gray.shape[1]
    return (x1 + x2) / 2 / side, (y1 + y2) / 2 / side, np.hypot(x1 - x2, y1 - y2) / side


# Where an independent eye detector should find the eyes: (midpoint height range, eye distance range, spread limit).
# mtcnn aligns to the template (eyes at 46% height, 31.5% of the side apart); the boxes frame more loosely.
EYES_EXPECTED = {"lbp": ((0.35, 0.5), (0.17, 0.27), 0.02), "haar": ((0.35, 0.5), (0.17, 0.27), 0.02)}
EYES_EXPECTED["mtcnn"] = ((0.41, 0.51), (0.27, 0.36), 0.012)


@pytest.mark.parametrize("method", ["lbp", "haar", "mtcnn"])
def test_crops_put_the_eyes_in_the_same_place_on_real_clips(av_actor05, samples_dir, method):
    """On real 1280x720 RAVDESS and 480x360 CREMA-D frames the crop centres the face: an independent eye detector
    finds both eyes near the middle of the crop's upper half, at one scale, in every clip (mtcnn: where its template
    puts them, more consistently still); in the centre square of the CREMA-D frames the face is a small part of the
    picture."""
    if method == "haar" and not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("OpenCV 5 has no CascadeClassifier")
    measured = {}
    for path in ORIGINALS + SAMPLE_FLVS:
        sample = extract_clip(str(path), "", Preprocessing(frames=4, face_crop=method), modalities=("video",))
        face = clip_info(sample)["faces"]
        assert face["kind"] == "face" and face["found"] == 4, (path.name, face)
        points = [e for e in map(eyes, sample["frames"]) if e is not None]
        assert points, f"no eyes found in the {method} crop of {path.name}"
        measured[path.name] = np.median(points, axis=0)
    (low_y, high_y), (low_distance, high_distance), spread = EYES_EXPECTED[method]
    for name, (x, y, distance) in measured.items():
        assert abs(x - 0.5) < 0.05 and low_y < y < high_y, (name, x, y, distance)
        assert low_distance < distance < high_distance, (name, x, y, distance)
    positions = np.array(list(measured.values()))
    assert positions.std(axis=0).max() < spread  # across clips of two corpora
    centre = extract_clip(
        str(SAMPLE_FLVS[0]), "", Preprocessing(frames=4, face_crop="none"), modalities=("video",)
    )
    loose = [e for e in map(eyes, centre["frames"]) if e is not None]
    assert all(distance < 0.15 for _, _, distance in loose)  # the face is a small part of the centre square


@pytest.mark.parametrize("method", ["lbp", "mtcnn"])
def test_pre_cropped_faces_are_kept_whole(av_actor05, method):
    for path in CROPPED[::40]:
        frames = read_frames(str(path), 4)
        face = find_face(frames, method, 0.35)
        assert face.kind == "whole" and face.found >= 3 and face.box == (0, 0, 224), (path.name, face)
        prep = Preprocessing(frames=4, image_size=224, face_crop=method)
        sample = extract_clip(str(path), "", prep, modalities=("video",))
        assert np.array_equal(sample["frames"], frames)  # not cropped again, not even resized


def write_faceless_clip(path: Path) -> Path:
    """An H.264 mp4 of moving grey noise with sound: video a detector finds no face in."""
    from cremad_lit.data.synthetic import encode_video

    rng = np.random.default_rng(0)
    frames = rng.integers(60, 200, (24, 240, 320, 3), dtype=np.uint8)
    voice = 0.2 * np.sin(2 * np.pi * 200 * np.arange(44100) / 44100)
    encode_video(path, frames, voice, "mp4")
    return path


@pytest.fixture(scope="module")
def mixed_manifest(av_actor05, samples_dir, tmp_path_factory) -> Path:
    """Real faces of three kinds: pre-cropped silent face videos, CREMA-D flv with sound, and a clip without a face."""
    folder = tmp_path_factory.mktemp("faces")
    faceless = write_faceless_clip(folder / "noface.mp4")
    rows = [{"video_path": str(p), "speaker": "ravdess05", "emotion": "neutral"} for p in CROPPED[:4]]
    rows += [
        {"video_path": str(p), "speaker": "cremad1001", "emotion": p.stem.split("_")[2]} for p in SAMPLE_FLVS
    ]
    rows.append({"video_path": str(faceless), "speaker": "nobody", "emotion": "HAP"})
    pd.DataFrame(rows).to_csv(folder / "clips.csv", index=False)
    return folder / "clips.csv"


def manifest_datamodule(manifest: Path, cache: Path, modalities, face_crop: str = "lbp") -> EmotionDataModule:
    return EmotionDataModule.from_config(
        dict(
            root=None,
            preprocessing={"frames": 4, "image_size": 64, "face_crop": face_crop},
            dataset="manifest",
            manifest=str(manifest),
            modalities=modalities,
            cache_dir=str(cache),
            split={"by": "clip", "fractions": (0.6, 0.2, 0.2)},
            output_dir=str(cache.parent / f"run-{'-'.join(modalities)}"),
        )
    )


def test_clips_are_prepared_with_what_they_have_and_runs_leave_out_what_they_lack(mixed_manifest, tmp_path):
    """One cache for all runs: the silent face videos are stored without audio (not skipped), a video-only run uses
    them, and an audio-visual or audio-only run leaves them out by name with the reason."""
    cache = tmp_path / "cache"
    video_only = manifest_datamodule(mixed_manifest, cache, ["video"])
    video_only.prepare_data()
    video_only.setup()
    report = json.loads((tmp_path / "run-video" / "prepare_report.json").read_text())
    assert report["skipped"] == [] and report["left_out"] == [] and len(video_only.clips) == 11
    silent = {r["clip_id"] for r in report["absent"]}
    assert silent == {p.stem for p in CROPPED[:4]}
    assert all(r["modality"] == "audio" and "audio" in r["reason"] for r in report["absent"])
    batch = next(iter(video_only.train_dataloader()))
    assert batch["frames"].shape[1:] == (4, 3, 64, 64) and "mel" not in batch

    for modalities in (["audio", "video"], ["audio"]):
        datamodule = manifest_datamodule(mixed_manifest, cache, modalities)
        datamodule.prepare_data()  # the cache is full: nothing is decoded again
        datamodule.setup()
        assert {r["clip_id"] for r in datamodule.left_out} == silent
        assert set(datamodule.clips["clip_id"]).isdisjoint(silent) and len(datamodule.clips) == 7
        written = json.loads((tmp_path / f"run-{'-'.join(modalities)}" / "prepare_report.json").read_text())
        assert {r["clip_id"] for r in written["left_out"]} == silent and written["decoded_now"] == 0


@pytest.mark.parametrize("method", ["lbp", "mtcnn"])
def test_face_report_and_contact_sheet_mark_the_clip_without_a_face(mixed_manifest, tmp_path, method):
    datamodule = manifest_datamodule(mixed_manifest, tmp_path / "cache", ["video"], method)
    report = datamodule.cache.build(datamodule.catalog())
    faces = report["faces"]
    assert faces["detector"] == method and faces["fallback_clips"] == ["noface"]
    assert faces["clips"]["noface"] == {"kind": "centre", "rate": 0.0, "searched": 4, "found": 0}
    assert faces["frames_searched"] == 44 and faces["frames_with_face"] >= 38
    assert {faces["clips"][p.stem]["kind"] for p in CROPPED[:4]} == {"whole"}
    assert {faces["clips"][p.stem]["kind"] for p in SAMPLE_FLVS} == {"face"}
    rows, _ = datamodule.face_rows()
    aligned = [r for r in rows if r["landmarks"]]  # mtcnn: the sheet draws each aligned clip's five points
    assert len(aligned) == (6 if method == "mtcnn" else 0) and all(len(r["landmarks"]) == 5 for r in aligned)
    sheet = draw_faces(datamodule, tmp_path / "faces.png")
    image = cv2.imread(str(sheet))
    assert image.shape[0] > 400 and image.shape[1] > 300
    # the fallback row is framed in red: strongly red pixels exist only because of it
    red = (image[..., 2] > 200) & (image[..., 1] < 60) & (image[..., 0] < 60)
    assert red.sum() > 200


def test_ravdess_twins_are_one_take_on_one_side_of_every_split(av_actor05):
    clips = build_catalog(FACE_CROPS, "ravdess")
    twins = [r for r in clips.attrs["rejected"] if r["reason"].startswith(SAME_TAKE)]
    # 60 takes of actor 05 less calm and surprised (16), each with a 01- and a 02- face video
    assert len(clips) == 44 and len(twins) == 44
    assert clips["video_path"].map(lambda p: Path(p).name.startswith("01-")).all()
    assert {Path(t["path"]).name[3:] for t in twins} == {Path(p).name[3:] for p in clips["video_path"]}
    for fold in range(4):
        split = make_split(clips, folds=4, fold=fold, by="clip")
        assert split["clip_id"].is_unique and set(split["clip_id"]) == set(clips["clip_id"])
    # beside the originals, the take's mp4 (with sound) is its video, not the silent face crop
    both = build_catalog(av_actor05, "ravdess").set_index("clip_id")
    for original in ORIGINALS:
        assert both.loc[original.stem[3:], "video_path"] == str(original)


def test_the_mp4_audio_track_is_the_audio_only_recording_of_the_take(av_actor05):
    """RAVDESS's 01- mp4 carries the same recording as the 03- wav of the same code, about 33 ms later (the AAC
    encoder delay): decoded through the video path, the waveforms and the Mel images match once shifted."""
    prep = Preprocessing(audio_fit="pad_crop")
    for mp4 in ORIGINALS:
        wav = RAVDESS / "Actor_05" / f"03-{mp4.stem[3:]}.wav"
        if not wav.is_file():
            pytest.skip(f"{wav} not found")
        track, speech = read_video_audio(str(mp4), 16000), read_wav(str(wav), 16000)
        from scipy.signal import correlate

        n = min(len(track), len(speech)) - 1600
        scores = correlate(track[: n + 1600], speech[:n], mode="valid")  # every lag from 0 to 1,600 samples
        lag = int(np.argmax(scores))
        correlation = np.corrcoef(track[lag : lag + n], speech[:n])[0, 1]
        assert 0.02 < lag / 16000 < 0.05 and correlation > 0.97, (mp4.name, lag, correlation)
        aligned = log_mel(track[lag:], prep)[0], log_mel(speech, prep)[0]
        width = min(a.shape[1] for a in aligned)
        assert np.corrcoef(aligned[0][:, :width].ravel(), aligned[1][:, :width].ravel())[0, 1] > 0.95


@pytest.mark.slow
def test_ravdess_audio_video_end_to_end(av_actor05, tmp_path):
    """prepare (frames and the mp4's own audio), a short training, evaluate and predict on the four originals."""
    data = [*common(av_actor05, tmp_path), "data=ravdess", "data.modalities=[audio,video]"]
    tiny = [
        "model=tiny",
        "data.preprocessing.frames=2",
        "model.video_backbone.input_size=32",
        "data.prepare_workers=0",
    ]
    prepared = run_cli("-m", "cremad_lit", "prepare", *data, *tiny, f"hydra.run.dir={tmp_path / 'prep'}")
    report = json.loads((tmp_path / "prep" / "prepare_report.json").read_text())
    assert report["skipped"] == [] and len(report["left_out"]) == 40  # the silent face crops, by name
    assert {r["modality"] for r in report["left_out"]} == {"audio"}
    assert "faces (face_crop=mtcnn)" in prepared.stdout and (tmp_path / "prep" / "faces.png").is_file()
    assert {report["faces"]["clips"][p.stem[3:]]["kind"] for p in ORIGINALS} == {"face"}

    train = [
        *data,
        *tiny,
        "trainer=cpu",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "trainer.max_epochs=2",
    ]
    run_cli("train.py", *train, "final=all_speakers", f"hydra.run.dir={tmp_path / 'train'}")
    assert (tmp_path / "train" / "faces.png").is_file()
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    run_cli(
        "evaluate.py", f"ckpt_path={checkpoint}", *data, "subset=all", f"hydra.run.dir={tmp_path / 'eval'}"
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_test"] == 4
    predicted = run_cli(
        "-m", "cremad_lit", "predict", f"ckpt_path={checkpoint}", f"inputs=[{','.join(map(str, ORIGINALS))}]"
    )
    for original in ORIGINALS:
        assert original.name in predicted.stdout


@pytest.mark.slow
def test_video_only_training_on_pre_cropped_faces(av_actor05, tmp_path):
    """The silent, pre-cropped face videos train a video-only model (one actor: the clip split, flagged LEAKY)."""
    tiny = ["model=tiny", "trainer=cpu", "data.preprocessing.frames=2", "model.video_backbone.input_size=32"]
    loaders = ["data.num_workers=0", "data.persistent_workers=false", "data.prepare_workers=0"]
    result = run_cli(
        "train.py",
        *common(FACE_CROPS, tmp_path),
        "data=ravdess",
        "data.modalities=[video]",
        "split.by=clip",
        *tiny,
        *loaders,
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "LEAKY" in result.stdout + result.stderr
    report = json.loads((tmp_path / "run" / "prepare_report.json").read_text())
    assert report["skipped"] == [] and report["left_out"] == [] and report["clips"] == 44
    faces = report["faces"]
    assert faces["rate"] > 0.8 and {c["kind"] for c in faces["clips"].values()} <= {"whole", "centre"}
    assert faces["fallback_clips"] == sorted(c for c, i in faces["clips"].items() if i["kind"] == "centre")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_test"] >= 6 and metrics["split_by"] == "clip"


def test_haar_without_opencvs_cascades_is_one_clear_error(monkeypatch, mixed_manifest, tmp_path):
    """OpenCV 5 has no CascadeClassifier: asking for face_crop=haar there stops before any clip, naming the fix."""
    from cremad_lit.data import faces

    faces._haar_cascade.cache_clear()
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)
    with pytest.raises(RuntimeError, match=r"OpenCV 5 removed it.*face_crop=lbp"):
        EmotionDataModule.from_config(
            dict(
                root=None,
                preprocessing={"face_crop": "haar"},
                dataset="manifest",
                manifest=str(mixed_manifest),
                modalities=["video"],
                cache_dir=str(tmp_path),
            )
        )
    faces._haar_cascade.cache_clear()
