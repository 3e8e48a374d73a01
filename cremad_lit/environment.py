"""The native stack this project runs on, checked before any work starts: a broken install stops the run, loudly.

    from cremad_lit.environment import require_environment
    require_environment()          # prepare, train, evaluate, predict and the baseline call this first

Each check loads one native dependency the way the pipeline uses it (torchaudio's Mel transform, torchvision's C++
ops, decord's and PyAV's FFmpeg, OpenCV's face cascade, openSMILE's library). A failure here is the environment's,
never a clip's: it must not be recorded as bad media (`python -m cremad_lit doctor` prints the whole picture).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

from cremad_lit.errors import Stop

REINSTALL = "rm -rf .venv && make install  (installs the locked, measured set in requirements.lock)"


class BrokenEnvironment(Stop, RuntimeError):
    """A dependency that cannot load or run: nothing the data did, so nothing to skip."""


@dataclass
class Check:
    name: str
    ok: bool
    version: str = ""
    detail: str = ""
    fix: str = ""


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _torch() -> None:
    import torch

    if float(torch.ones(2, 2).sum()) != 4.0:
        raise RuntimeError("torch computes 1+1+1+1 != 4")


def _torchaudio() -> None:
    import torch
    import torchaudio.functional as AF
    import torchaudio.transforms as T

    mel = T.MelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=64)(torch.zeros(16000))
    AF.resample(torch.zeros(4800), 48000, 16000)
    if tuple(mel.shape) != (64, 32):
        raise RuntimeError(f"MelSpectrogram gave shape {tuple(mel.shape)}, expected (64, 32)")


def _torchvision() -> None:
    import torch
    from torchvision.ops import nms

    nms(
        torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5
    )  # a C++ op: fails if the build mismatches


def _decord() -> None:
    import decord

    decord.cpu(0)


def _pyav() -> None:
    import av

    av.codec.Codec("h264", "r")


def _opencv() -> None:
    import cv2
    import numpy as np

    cv2.resize(np.zeros((8, 8, 3), np.uint8), (4, 4), interpolation=cv2.INTER_AREA)


def _face_detector() -> None:
    import numpy as np

    from cremad_lit.data.faces import detect_faces

    detect_faces(np.zeros((48, 48), np.uint8), "lbp")


def _face_landmarks() -> None:
    import numpy as np

    from cremad_lit.data.faces import detect_landmarks

    detect_landmarks([np.zeros((48, 48, 3), np.uint8)], 20)


def _expression_model() -> None:
    import torch

    from cremad_lit.models.fer_minixception import load_minixception

    with torch.inference_mode():
        load_minixception()(torch.zeros(1, 1, 64, 64))


def _speaker_encoder() -> None:
    import torch

    from cremad_lit.models.ge2e import SAMPLE_RATE, load_ge2e

    with torch.inference_mode():
        load_ge2e().embed_utterance(torch.zeros(SAMPLE_RATE))


def _opensmile() -> None:
    # Importing loads libSMILEapi (and declares its C signatures); one instance made and freed runs it. Not
    # opensmile.Smile(...): its first call scans every installed distribution (audobject's class key), a second a
    # command spent on nothing native.
    from pathlib import Path

    import opensmile
    from opensmile.core.config import config
    from opensmile.core.lib import smileapi

    handle = smileapi.smile_new()
    if not handle:
        raise RuntimeError("openSMILE's smile_new returned NULL")
    smileapi.smile_free(handle)
    root = Path(opensmile.__file__).parent / "core" / config.CONFIG_ROOT
    for feature_set in (opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureSet.ComParE_2016):
        if not (root / (feature_set.value + config.CONFIG_EXT)).is_file():
            raise FileNotFoundError(f"openSMILE's {feature_set.name} configuration is missing under {root}")


# name, distribution, check, what to do when it fails
NATIVE: list[tuple[str, str, Callable[[], None], str]] = [
    ("torch", "torch", _torch, REINSTALL),
    (
        "torchaudio",
        "torchaudio",
        _torchaudio,
        "torchaudio must be built for the installed torch (a newer torchaudio beside an older torch fails with "
        f"'undefined symbol'; a CUDA torchaudio beside a CPU torch with 'libc10_cuda.so'): {REINSTALL}",
    ),
    ("torchvision", "torchvision", _torchvision, f"torchvision must match the installed torch: {REINSTALL}"),
    ("decord", "decord", _decord, f"{REINSTALL}; or use data.decoder=pyav"),
    ("PyAV", "av", _pyav, REINSTALL),
    ("OpenCV", "opencv-python-headless", _opencv, REINSTALL),
    ("face detector (LBP cascade)", "scikit-image", _face_detector, REINSTALL),
    ("face landmarks (MTCNN)", "facenet-pytorch", _face_landmarks, REINSTALL),
    ("expression model (FER2013 mini-Xception, h5py)", "fer", _expression_model, REINSTALL),
    ("speaker encoder (GE2E, Resemblyzer's weights)", "resemblyzer", _speaker_encoder, REINSTALL),
    ("openSMILE", "opensmile", _opensmile, REINSTALL),
]


def describe(error: BaseException) -> str:
    """The error and its cause in one line: a failed library load says why (an undefined symbol) in the cause."""
    text = f"{type(error).__name__}: {str(error).strip()[:300]}"
    if error.__cause__ is not None and str(error.__cause__).strip():
        text += f" (because {type(error.__cause__).__name__}: {str(error.__cause__).strip()[:300]})"
    return text


def check_native() -> list[Check]:
    checks = []
    for name, distribution, check, fix in NATIVE:
        try:
            check()
            checks.append(Check(name, True, _version(distribution)))
        except Exception as error:  # any failure to load or run is the finding
            checks.append(Check(name, False, _version(distribution), describe(error), fix))
    return checks


def failure_message(
    failed: list[Check], consequence: str = "nothing was started (no clip was decoded or cached)"
) -> str:
    lines = [f"the environment is broken, so {consequence}:"]
    for check in failed:
        lines.append(f"  {check.name} {check.version}: {check.detail}")
        lines.append(f"    fix: {check.fix}")
    lines.append("  python -m cremad_lit doctor shows the whole environment.")
    return "\n".join(lines)


_checked = False


def require_environment() -> None:
    """Raise BrokenEnvironment naming every native dependency that does not load; cheap after the first call."""
    global _checked
    if _checked:
        return
    failed = [c for c in check_native() if not c.ok]
    if failed:
        raise BrokenEnvironment(failure_message(failed))
    _checked = True
