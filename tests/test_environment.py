"""A broken environment stops the run and never becomes data; the lock agrees with pyproject.toml; the doctor.

A stand-in `torchaudio` package on PYTHONPATH raises the OSError a mismatched torchaudio gives on import (the break
a fresh install met when torchaudio 2.11.1 landed beside torch 2.11.0).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from cremad_lit.data.cache import ClipCache
from cremad_lit.data.catalog import build_catalog
from cremad_lit.data.features import Preprocessing
from cremad_lit.environment import BrokenEnvironment
from tests.conftest import REPO, run_cli, six_emotion_wavs, write_manifest

UNDEFINED_SYMBOL = (
    "Could not load this library: /venv/lib/python3.11/site-packages/torchaudio/lib/libtorchaudio.so: "
    "undefined symbol: torch_exception_get_what_without_backtrace"
)


@pytest.fixture
def broken_torchaudio(tmp_path) -> dict:
    """Environment variables that put a torchaudio which cannot load in front of the real one."""
    package = tmp_path / "stand-in" / "torchaudio"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise OSError({UNDEFINED_SYMBOL!r})\n")
    return {"PYTHONPATH": str(package.parent)}


@pytest.fixture
def speech_manifest(ravdess_dir, tmp_path) -> Path:
    """8 real RAVDESS clips of two speakers (audio only: decoding them needs torchaudio's Mel transform)."""
    wavs = [
        w
        for a in ("01", "02")
        for w in six_emotion_wavs(sorted((ravdess_dir / f"Actor_{a}").glob("*.wav")))[:4]
    ]
    return write_manifest(tmp_path / "clips.csv", wavs)


def prepare_args(manifest: Path, tmp_path: Path, run: str) -> list[str]:
    return [
        "-m",
        "cremad_lit",
        "prepare",
        "data=manifest",
        f"data.manifest={manifest}",
        "data.modalities=[audio]",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / run}",
    ]


def test_doctor_loads_every_native_part_and_decodes_each_path():
    result = run_cli("-m", "cremad_lit", "doctor", "--cache-dir", str(REPO / "data" / "cache"))
    for part in ("torch", "torchaudio", "torchvision", "decord", "PyAV", "OpenCV", "openSMILE"):
        assert re.search(rf"\[ok  \] {part} \d", result.stdout), part
    for path in ("frames, decord", "frames, PyAV", "video's audio, decord", "video's audio, PyAV", "WAV"):
        assert f"[ok  ] decode: {path}" in result.stdout
    assert "trainer.precision=auto gives" in result.stdout and "GiB free" in result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")


@pytest.mark.slow
def test_a_library_that_cannot_load_stops_every_command_and_a_rerun_decodes_every_clip(
    broken_torchaudio, speech_manifest, tmp_path
):
    doctor = run_cli("-m", "cremad_lit", "doctor", check=False, env=broken_torchaudio)
    assert doctor.returncode == 1
    assert "[FAIL] torchaudio" in doctor.stdout and "undefined symbol" in doctor.stdout
    assert "fix: torchaudio must be built for the installed torch" in doctor.stdout

    broken = run_cli(*prepare_args(speech_manifest, tmp_path, "broken"), check=False, env=broken_torchaudio)
    assert broken.returncode != 0
    assert "the environment is broken, so nothing was started" in broken.stderr
    assert "torchaudio" in broken.stderr and "make install" in broken.stderr
    cache_root = tmp_path / "cache"
    assert not list(cache_root.rglob("skipped.json")) and not list(cache_root.rglob("*.npz"))

    train = run_cli(
        "train.py",
        "data=manifest",
        f"data.manifest={speech_manifest}",
        "model=speech_cnn",
        "data.modalities=[audio]",
        f"paths.cache_dir={cache_root}",
        f"hydra.run.dir={tmp_path / 'train'}",
        check=False,
        env=broken_torchaudio,
    )
    assert train.returncode != 0 and "the environment is broken" in train.stderr

    fixed = run_cli(*prepare_args(speech_manifest, tmp_path, "fixed"))
    report = json.loads((tmp_path / "fixed" / "prepare_report.json").read_text())
    assert report["decoded_now"] == 8 and report["skipped"] == []
    assert len(list(cache_root.rglob("*.npz"))) == 8
    assert "8 clips in" in fixed.stdout


@pytest.fixture
def few_clips(synthetic_root):
    return build_catalog(synthetic_root).head(6)


def test_the_canary_decides_between_a_broken_library_and_a_damaged_file(few_clips, tmp_path, monkeypatch):
    """A library that fails on every file fails on the canary too: the build stops naming it and records nothing. One
    odd failure among good clips, while the canary decodes, is that file's: skipped with the exception as its reason
    and its files' fingerprint, so the next build does not decode it again."""
    import cremad_lit.data.features as features_module

    real_extract = features_module.extract_clip

    def library_fails(*args, **kwargs):
        raise OSError(UNDEFINED_SYMBOL)

    cache = ClipCache(tmp_path, Preprocessing(frames=2, image_size=32))
    monkeypatch.setattr(features_module, "extract_clip", library_fails)
    with pytest.raises(BrokenEnvironment, match=r"(?s)undefined symbol.*canary.*doctor") as stop:
        cache.build(few_clips)
    assert "Nothing was recorded" in str(stop.value) and "The library: torchaudio." in str(stop.value)
    assert json.loads(cache.skipped_file.read_text()) == [] and not list(cache.dir.glob("*.npz"))

    failing = few_clips.iloc[3]["video_path"]

    def fails_on_one_file(video_path, *args, **kwargs):
        if video_path == failing:
            raise RuntimeError()  # a decoder's error with no message, as a damaged flv gave
        return real_extract(video_path, *args, **kwargs)

    monkeypatch.setattr(features_module, "extract_clip", fails_on_one_file)
    report = cache.build(few_clips)
    assert report["decoded_now"] == 6 and "errors" not in report
    [skip] = report["skipped"]
    assert skip["path"] == failing and skip["reason"].startswith("damaged: RuntimeError")
    assert failing in skip["files"]
    again = cache.build(few_clips)
    assert again["decoded_now"] == 0 and again["skipped"] == report["skipped"]
    monkeypatch.undo()
    retried = cache.build(few_clips, retry_skipped=True)
    assert retried["decoded_now"] == 1 and retried["skipped"] == []
    assert all(cache.has(c) for c in few_clips["clip_id"])


def test_a_skipped_clip_is_decoded_again_once_its_file_changes(few_clips, synthetic_root, tmp_path):
    """A skip (and a clip stored without one of its modalities) holds the size and modification time of its files: a
    repaired file is tried again, an unchanged one is not; records without them (written before this rule) are
    retried."""
    root = tmp_path / "corpus"
    shutil.copytree(synthetic_root, root)
    clips = build_catalog(root).head(4)
    broken_wav = Path(clips.iloc[0]["audio_path"])
    broken_video = Path(clips.iloc[0]["video_path"])
    good_video, good_wav = broken_video.read_bytes(), broken_wav.read_bytes()
    broken_video.write_bytes(b"\x00" * 100)  # not a video at all
    broken_wav.write_bytes(b"RIFF" + b"\x00" * 60)  # nor a WAV (and no audio track to fall back on)
    cache = ClipCache(tmp_path / "cache", Preprocessing(frames=2, image_size=32))
    first = cache.build(clips)
    [skip] = first["skipped"]
    assert skip["clip_id"] == clips.iloc[0]["clip_id"] and str(broken_video) in skip["files"]
    assert skip["files"][str(broken_video)][0] == 100 and str(broken_wav) in skip["files"]
    assert "video:" in skip["reason"] and "audio:" in skip["reason"]
    assert cache.build(clips)["decoded_now"] == 0  # unchanged: still a skip

    broken_wav.write_bytes(good_wav)  # the audio repaired: stored with its audio, the video still missing
    partial = cache.build(clips)
    assert partial["decoded_now"] == 1 and partial["skipped"] == [] and cache.has(skip["clip_id"])
    assert [(r["clip_id"], r["modality"]) for r in partial["absent"]] == [(skip["clip_id"], "video")]
    assert set(cache.load(skip["clip_id"])) == {"mel", "waveform", "info"}
    assert cache.build(clips)["decoded_now"] == 0  # unchanged: the entry stands

    broken_video.write_bytes(good_video)  # the video repaired too: decoded again, whole
    repaired = cache.build(clips)
    assert repaired["decoded_now"] == 1 and repaired["absent"] == [] and cache.has(skip["clip_id"])
    assert {"frames", "mel"} <= set(cache.load(skip["clip_id"]))
    assert json.loads(cache.skipped_file.read_text()) == []

    # A record in the old form (no fingerprint), as a broken install left them: decoded again.
    cache.entry(skip["clip_id"]).unlink()
    cache.skipped_file.write_text(
        json.dumps([{"clip_id": skip["clip_id"], "path": "x", "reason": "OSError: ..."}])
    )
    assert cache.build(clips)["decoded_now"] == 1 and cache.has(skip["clip_id"])


def test_the_lock_satisfies_pyproject_and_pins_the_measured_torch_set():
    from packaging.requirements import Requirement

    from cremad_lit.checks import locked_versions, norm

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked_versions(REPO / "requirements.lock")
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = norm(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert any(requirement.specifier.contains(v, prereleases=True) for v in pins[name]), (
            f"requirements.lock pins {name} {pins[name]}, outside pyproject.toml's {requirement.specifier}: make lock"
        )
    measured = re.search(r"^LOCK_PINS := (.+)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    for pin in measured:
        name, version = pin.split("==")
        assert pins[name] == {version}, (
            f"the lock holds {name} {pins[name]}, the Makefile's measured set {version}"
        )
    # Every pin carries hashes, so pip --require-hashes installs exactly these files.
    text = (REPO / "requirements.lock").read_text()
    assert text.count("--hash=sha256:") >= sum(len(v) for v in pins.values())


@pytest.mark.skipif(
    bool(os.environ.get("CREMAD_LIT_UNLOCKED")),
    reason="make check-latest installs the newest versions on purpose",
)
def test_the_installed_environment_is_the_lock():
    from cremad_lit.checks import lock_differences

    assert lock_differences(REPO / "requirements.lock") == []
