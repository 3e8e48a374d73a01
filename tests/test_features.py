"""Features: Mel settings, face crop on the real clips, cache keys."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cremad_lit.data.faces import detect_faces, find_face
from cremad_lit.data.features import (
    Preprocessing,
    extract_clip,
    log_mel,
    normalise_frames,
    prepare_frames,
)
from cremad_lit.data.media import read_frames
from tests.conftest import SAMPLE_FLVS


@pytest.mark.parametrize("fit", ["resize", "pad_crop"])
def test_mel_is_64_by_128_in_db(fit):
    tone = np.sin(2 * np.pi * 440 * np.arange(40000) / 16000).astype(np.float32)
    mel = log_mel(tone, Preprocessing(audio_fit=fit))
    assert mel.shape == (1, 64, 128)
    assert mel.max() - mel.min() <= 80.0 + 1e-3  # AmplitudeToDB with top_db=80
    band = mel[0].mean(axis=1).argmax()  # 440 Hz lands in a low Mel band
    assert 5 < band < 25


def test_pad_crop_keeps_time_scale_and_resize_stretches():
    short = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)  # 0.5 s: 16 Mel frames
    padded = log_mel(short, Preprocessing(audio_fit="pad_crop"))
    stretched = log_mel(short, Preprocessing(audio_fit="resize"))
    assert np.allclose(padded[0, :, 20:], padded[0, :, 20:].min())  # padding after the audio ends
    assert stretched[0, :, 100:].std() > 1  # the same audio spread over all 128 columns


@pytest.mark.parametrize("method", ["lbp", "haar"])
@pytest.mark.parametrize("path", SAMPLE_FLVS, ids=lambda p: p.stem)
def test_face_crop_holds_the_face_on_real_clips(path, method):
    if method == "haar" and not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("OpenCV 5 has no CascadeClassifier")
    frames = read_frames(str(path), 8)
    face = find_face(frames, method, margin=0.35)
    assert face.kind == "face" and face.found == 8
    left, top, side = face.box
    # the face fills about a quarter of the 480-px width; with the margin the square is roughly half the height
    assert 140 < side < 300 and 120 < left + side / 2 < 360
    crop, _ = prepare_frames(frames, Preprocessing(face_crop=method, image_size=224))
    assert crop.shape == (8, 224, 224, 3)
    gray = cv2.cvtColor(crop[4], cv2.COLOR_RGB2GRAY)
    faces = detect_faces(
        gray, "lbp" if method == "haar" else "haar" if hasattr(cv2, "CascadeClassifier") else "lbp"
    )
    assert (
        len(faces) and max(w for _, _, w, _ in faces) > 224 * 0.4
    )  # the face now fills a large part of the crop


def test_no_face_falls_back_to_the_centre_square():
    frames = np.zeros((2, 360, 480, 3), dtype=np.uint8)
    frames[:, :, 60:420] = 200  # the centre 360x360 square
    crop, face = prepare_frames(frames, Preprocessing(face_crop="lbp", image_size=32))
    assert crop.shape == (2, 32, 32, 3) and crop.min() == 200
    assert face.kind == "centre" and face.fallback and (face.searched, face.found) == (2, 0)


def test_cache_key_changes_with_every_setting():
    base = Preprocessing()
    keys = {base.key()}
    for change in (
        {"frames": 16},
        {"image_size": 160},
        {"face_crop": "haar"},
        {"face_crop": "lbp"},
        {"n_mels": 128},
        {"hop_length": 256},
        {"audio_fit": "pad_crop"},
    ):
        keys.add(Preprocessing(**change).key())
    assert len(keys) == 8 and Preprocessing().key() == base.key()
    with pytest.raises(ValueError, match="face_crop"):
        Preprocessing(face_crop="dlib")


def test_normalise_frames_uses_the_given_mean_and_std():
    frames = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
    out = normalise_frames(frames, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert out.shape == (2, 3, 4, 4) and torch.allclose(out, torch.full_like(out, 2.0))


def test_extract_clip_only_decodes_requested_modalities(synthetic_root):
    video = str(synthetic_root / "VideoFlash" / "1001_IEO_ANG_HI.flv")
    assert set(extract_clip(video, "", Preprocessing(frames=2, image_size=32), modalities=("audio",))) == {
        "mel",
        "waveform",
        "info",
    }
    assert set(extract_clip(video, "", Preprocessing(frames=2, image_size=32), modalities=("video",))) == {
        "frames",
        "info",
    }
