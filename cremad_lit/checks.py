"""The environment checks `doctor` prints: versions, native libraries, decoding, the accelerator, the cache.

Usage and options: commands/doctor.py (`python -m cremad_lit doctor`).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from cremad_lit.environment import REINSTALL, Check, check_native

STACK = [
    "torch",
    "torchvision",
    "torchaudio",
    "lightning",
    "hydra-core",
    "omegaconf",
    "timm",
    "decord",
    "av",
    "pebble",
    "opencv-python-headless",
    "scikit-image",
    "torchmetrics",
    "wandb",
    "pandas",
    "matplotlib",
    "numpy",
    "opensmile",
    "scikit-learn",
    "transformers",
    "facenet-pytorch",
    "fer",
    "h5py",
]


def decode_checks(workdir: Path) -> list[Check]:
    """Write a tiny FLV1/MP3 clip and its WAV with PyAV, then decode them the ways the pipeline does."""
    from cremad_lit.data.canary import write_canary
    from cremad_lit.data.features import Preprocessing, extract_clip
    from cremad_lit.data.media import read_frames, read_video_audio, read_wav

    checks = []
    try:  # the canary clips the pipeline decodes when a file fails (data/canary.py)
        video, wav = write_canary("flv", workdir), write_canary("wav", workdir)
        checks.append(Check("encode FLV1/MP3 (PyAV)", True, detail=f"{video.stat().st_size} bytes"))
    except Exception as error:
        return [
            Check("encode FLV1/MP3 (PyAV)", False, detail=f"{type(error).__name__}: {error}", fix=REINSTALL)
        ]
    steps = [
        ("frames, decord", lambda: read_frames(str(video), 8, "decord").shape),
        ("frames, PyAV", lambda: read_frames(str(video), 8, "pyav").shape),
        ("video's audio, decord", lambda: read_video_audio(str(video), 16000, "decord").shape),
        ("video's audio, PyAV", lambda: read_video_audio(str(video), 16000, "pyav").shape),
        ("WAV, resampled to 16 kHz", lambda: read_wav(str(wav), 16000).shape),
        (
            "clip features (face crop, Mel)",
            lambda: {
                k: v.shape
                for k, v in extract_clip(
                    str(video), str(wav), Preprocessing(image_size=64, face_crop="mtcnn")
                ).items()
            },
        ),
    ]
    for name, step in steps:
        try:
            checks.append(Check(f"decode: {name}", True, detail=str(step())))
        except Exception as error:
            checks.append(
                Check(f"decode: {name}", False, detail=f"{type(error).__name__}: {error}", fix=REINSTALL)
            )
    return checks


def accelerator_check() -> Check:
    import torch

    from cremad_lit.pipeline import resolve_precision

    precision = resolve_precision("auto", "auto")
    if torch.cuda.is_available():
        device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        device = f"CPU only ({torch.get_num_threads()} threads; torch built for CUDA {torch.version.cuda})"
    return Check("accelerator", True, detail=f"{device}; trainer.precision=auto gives {precision}")


def cache_check(cache_dir: Path) -> Check:
    existing = cache_dir
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free / 2**30
    ok = free >= 1.0
    return Check(
        "cache folder",
        ok,
        detail=f"{cache_dir.resolve()} ({'exists' if cache_dir.exists() else 'not created yet'}), {free:.1f} GiB free",
        fix="" if ok else "free some space or point paths.cache_dir at a larger disk",
    )


def norm(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock_file: Path) -> dict[str, set[str]]:
    """name -> the versions a lock pins (a universal lock may pin several, one per Python or platform)."""
    locked: dict[str, set[str]] = {}
    for line in Path(lock_file).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            locked.setdefault(norm(match.group(1)), set()).add(match.group(2))
    return locked


def lock_differences(lock_file: Path) -> list[str]:
    """Installed packages whose version is not the lock's."""
    import importlib.metadata

    locked = locked_versions(lock_file)
    rows = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: norm(d.metadata["Name"])):
        name = norm(dist.metadata["Name"])
        if name in ("cremad-lit", "pip"):  # the project itself, and the venv's own installer
            continue
        pinned = locked.get(name)
        if pinned is None:
            rows.append(f"{name} {dist.version} (not in the lock)")
        elif dist.version not in pinned:
            rows.append(f"{name} {dist.version} (lock: {' / '.join(sorted(pinned))})")
    return rows


def overridden(pyproject: Path) -> set[str]:
    """The names in pyproject.toml's [tool.uv] override-dependencies: requirements the lock replaces on purpose."""
    block = re.search(r"override-dependencies\s*=\s*\[(.*?)\]", Path(pyproject).read_text(), re.S)
    entries = re.findall(r"[\"']([A-Za-z0-9][A-Za-z0-9._-]*)", block.group(1)) if block else []
    return {norm(name) for name in entries}


def pip_check_problems(pyproject: Path) -> list[str]:
    """pip check's complaints, less those about a requirement pyproject.toml overrides (facenet-pytorch's torch<2.3,
    fer's TensorFlow): those are the lock's decisions, tested by the suite."""
    import subprocess

    report = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    replaced = overridden(pyproject)
    problems = []
    for line in report.stdout.splitlines():
        match = re.search(r"(?:requires|has requirement) ([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if (
            line.strip()
            and not (match and norm(match.group(1)) in replaced)
            and "No broken requirements" not in line
        ):
            problems.append(line)
    return problems


def show(check: Check) -> None:
    mark = "ok  " if check.ok else "FAIL"
    print(
        f"  [{mark}] {check.name}{' ' + check.version if check.version else ''}{': ' + check.detail if check.detail else ''}"
    )
    if not check.ok and check.fix:
        print(f"         fix: {check.fix}")


def run_checks(quick: bool, cache_dir: Path) -> list[Check]:
    """Every check, each printed as it runs: the native libraries; then, unless `quick` or one of those failed, a
    generated clip decoded through each decoder path, the accelerator and the cache folder."""
    print("native libraries:")
    checks = check_native()
    for check in checks:
        show(check)
    if quick or not all(c.ok for c in checks):
        return checks
    print("decoding a generated clip:")
    with tempfile.TemporaryDirectory(prefix="cremad-doctor-") as tmp:
        for check in decode_checks(Path(tmp)):
            show(check)
            checks.append(check)
    print("where runs go:")
    for check in (accelerator_check(), cache_check(cache_dir)):
        show(check)
        checks.append(check)
    return checks
