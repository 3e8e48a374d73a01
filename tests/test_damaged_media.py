"""Damaged media, crashing and hanging decoders, full disks, read-only folders, damaged cache entries: each one a
clip skipped with its reason or one clear error, never a broken environment by mistake and never a partial file.

    .venv/bin/python -m pytest tests/test_damaged_media.py
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cremad_lit.data.cache import ClipCache
from cremad_lit.data.catalog import build_catalog
from cremad_lit.data.features import Preprocessing
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.environment import BrokenEnvironment
from cremad_lit.io import DiskFull, NotWritable
from tests.conftest import SHARED, inject_faults, run_cli, use_debug_plugin

DAMAGE = ("flip", "truncate", "zero", "repeat", "shuffle", "header")


def damaged(data: bytes, kind: str, rng: random.Random) -> bytes:
    """`data` with one kind of damage a download or a disk does: bits flipped, cut short, a run zeroed, repeated or
    moved, or the header overwritten."""
    b, n = bytearray(data), len(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 40)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randint(1, n - 1)]
    elif kind == "zero":
        start, size = rng.randrange(n), rng.randint(64, 4096)
        b[start : start + size] = bytes(len(b[start : start + size]))
    elif kind == "repeat":
        start, size = rng.randrange(n), rng.randint(64, 4096)
        b[start:start] = b[start : start + size] * rng.randint(2, 5)
    elif kind == "shuffle":
        size = max(64, n // 16)
        chunks = [b[i : i + size] for i in range(0, n, size)]
        body = chunks[1:]
        rng.shuffle(body)
        b = bytearray().join(chunks[:1] + body)
    else:  # header
        for i in rng.sample(range(min(n, 64)), rng.randint(1, 8)):
            b[i] = rng.randrange(256)
    return bytes(b)


def real_media() -> dict[str, list[Path]]:
    kinds = {
        "flv": sorted((SHARED / "cremad-samples" / "VideoFlash").glob("*.flv")),
        "mp4": sorted((SHARED / "ravdess-av-actor05" / "Actor_05").glob("*.mp4"))[:1],
        "avi": sorted((SHARED / "ravdess-av-actor05" / "face-crops" / "Actor_05").glob("*.avi"))[:6],
        "wav": sorted((SHARED / "cremad-samples" / "AudioWAV").glob("*.wav"))[:6],
    }
    if not all(kinds.values()):
        pytest.skip(f"the shared real media are not at {SHARED} (set CREMAD_LIT_SHARED)")
    return kinds


def fuzzed_manifest(folder: Path, copies: int = 9, seed: int = 0) -> tuple[Path, list[dict]]:
    """`copies` damaged copies of real media of each kind (flv, mp4, avi, wav), plus one intact file of each, in a
    manifest: one speaker per kind, emotions in turn. Returns the manifest and each clip's damage."""
    rng = random.Random(seed)
    rows, made = [], []
    emotions = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
    media = real_media()
    face = media["avi"][-1]
    for kind, sources in media.items():
        for i in range(copies + 1):
            source = sources[i % len(sources)]
            damage = DAMAGE[i % len(DAMAGE)] if i < copies else "none"
            data = source.read_bytes() if damage == "none" else damaged(source.read_bytes(), damage, rng)
            path = folder / f"{kind}{i:02d}-{damage}.{kind}"
            path.write_bytes(data)
            # A WAV goes with an intact silent face video (the catalog wants a video for audio-visual clips).
            files = (
                {"audio_path": path.name, "video_path": str(face)}
                if kind == "wav"
                else {"video_path": path.name}
            )
            rows.append({**files, "speaker": kind, "emotion": emotions[i % 6], "clip_id": path.stem})
            made.append({"clip_id": path.stem, "damage": damage, "kind": kind})
    manifest = folder / "clips.csv"
    pd.DataFrame(rows).fillna("").to_csv(manifest, index=False)
    return manifest, made


def test_fuzzed_real_media_are_each_cached_or_skipped_and_a_second_run_decodes_nothing(tmp_path):
    """36 damaged copies of real flv, mp4, avi and wav files (seeded) and 4 intact ones, prepared twice with worker
    processes as a user would: both runs exit 0, every clip is cached or skipped with a reason, the intact ones are
    cached, the second run decodes nothing, and every cached entry loads."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    manifest, made = fuzzed_manifest(corpus)
    args = [
        "-m",
        "cremad_lit",
        "prepare",
        "data=manifest",
        f"data.manifest={manifest}",
        "data.prepare_workers=2",
        "data.decode_timeout_s=60",
        "data.preprocessing.frames=4",
        "data.preprocessing.face_crop=none",
        "model.video_backbone.input_size=64",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    reports = []
    for run in ("first", "second"):
        result = run_cli(*args, f"hydra.run.dir={tmp_path / run}")
        assert "Traceback" not in result.stderr
        reports.append(json.loads((tmp_path / run / "prepare_report.json").read_text()))
    first, second = reports
    assert "errors" not in first and first["decoded_now"] == 40 and second["decoded_now"] == 0
    cache = ClipCache(tmp_path / "cache", Preprocessing(**first["settings"]))
    cache.dir = Path(first["cache_dir"])
    skipped = {s["clip_id"]: s for s in first["skipped"]}
    assert all(s["reason"] and s["files"] for s in skipped.values())
    for clip in made:
        if clip["clip_id"] in skipped:
            assert clip["damage"] != "none", (
                f"an intact {clip['kind']} was skipped: {skipped[clip['clip_id']]}"
            )
            continue
        entry = cache.load(clip["clip_id"])  # raises DamagedEntry if it does not read back
        assert "mel" in entry or "frames" in entry
    assert second["skipped"] == first["skipped"]
    cached = len(made) - len(skipped)
    assert cached >= 4 and len(list(cache.dir.glob("*.npz"))) == cached
    assert not list(cache.dir.glob(".*.tmp"))


@pytest.fixture
def four_clips(synthetic_root):
    return build_catalog(synthetic_root).head(4)


def test_a_decoder_that_crashes_or_hangs_on_a_file_costs_that_clip_only(four_clips, tmp_path, monkeypatch):
    crash, hang = (Path(four_clips.iloc[i]["video_path"]).stem for i in (1, 2))
    inject_faults(monkeypatch, f"crash:{crash},hang:{hang}")
    cache = ClipCache(tmp_path, Preprocessing(frames=2, image_size=32))
    report = cache.build(four_clips, workers=2, decode_timeout_s=8)
    reasons = {Path(s["path"]).stem: s["reason"] for s in report["skipped"]}
    assert reasons == {
        crash: "decoder crashed (SIGSEGV)",
        hang: "decoding took longer than data.decode_timeout_s=8 s (stopped)",
    }
    assert all(cache.has(c) for c in four_clips["clip_id"][[0, 3]])
    assert cache.build(four_clips, workers=2, decode_timeout_s=8)["decoded_now"] == 0  # recorded, not retried


def test_a_decoder_that_crashes_on_the_canary_too_is_the_environment(four_clips, tmp_path, monkeypatch):
    crash = Path(four_clips.iloc[0]["video_path"]).stem
    inject_faults(monkeypatch, f"crash:{crash},crash:canary")
    cache = ClipCache(tmp_path, Preprocessing(frames=2, image_size=32))
    with pytest.raises(BrokenEnvironment, match=r"decoder crashed \(SIGSEGV\).*canary.*fails too"):
        cache.build(four_clips, workers=2, decode_timeout_s=30)
    assert json.loads(cache.skipped_file.read_text()) == []


def test_a_dataloader_worker_that_crashes_on_a_clip_costs_that_clip_only(
    synthetic_root, tmp_path, monkeypatch
):
    """data.cache=off decodes in the DataLoader's workers: a decoder crash (SIGSEGV) there is that clip's skip with its
    reason, every other clip of the epoch is batched once, and the next epoch leaves the clip out without a crash; a
    crash on the canary too is the environment."""
    from tests.test_datamodule import make

    datamodule = make(synthetic_root, tmp_path, cache="off", num_workers=2, batch_size=4)
    clips = datamodule.datasets["train"].clips
    victim = clips.iloc[5]
    inject_faults(monkeypatch, f"crash:{Path(victim.video_path).stem}")
    loader = datamodule.train_dataloader()
    for _epoch in range(2):
        seen = [c for batch in loader for c in batch["clip_id"]]
        assert sorted(seen) == sorted(set(clips["clip_id"]) - {victim.clip_id})
    [crash] = loader.crashes
    assert crash["clip_id"] == victim.clip_id and crash["path"] == victim.video_path
    assert crash["reason"].startswith("decoder crashed in a DataLoader worker (")
    assert datamodule.decoder_crashes() == loader.crashes

    inject_faults(monkeypatch, f"crash:{Path(victim.video_path).stem},crash:canary")
    with pytest.raises(BrokenEnvironment, match=r"decoder crashed in a DataLoader worker.*canary.*fails too"):
        list(datamodule.train_dataloader())


def test_a_worker_crash_while_the_training_step_runs_costs_that_clip_only(
    synthetic_root, tmp_path, monkeypatch
):
    """torch reports a dead worker from a signal handler, in whatever the main thread runs then: here the consumer's own
    work between batches, as a training step. The crash is still that clip's skip, found where the loader waits."""
    import time

    from cremad_lit.data.dataset import collate_skipping_bad
    from cremad_lit.data.loader import CrashTolerantLoader
    from tests.test_datamodule import make

    dataset = make(synthetic_root, tmp_path, cache="off", num_workers=2, batch_size=4).datasets["train"]
    # In order, 4 clips a batch, 2 workers: batch 5 is asked for as batch 1 is taken, so it decodes in the step after.
    victim = dataset.clips.iloc[21]
    inject_faults(monkeypatch, f"crash:{Path(victim.video_path).stem}")
    loader = CrashTolerantLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_skipping_bad)
    seen = []
    for batch in loader:
        seen += batch["clip_id"]
        time.sleep(2 if len(seen) == 8 else 0)  # the training step on batch 1
    assert sorted(seen) == sorted(set(dataset.clips["clip_id"]) - {victim.clip_id})
    assert [c["reason"] for c in loader.crashes] == [
        "decoder crashed in a DataLoader worker (is killed by signal: Segmentation fault)"
    ]


@pytest.mark.slow
def test_train_py_goes_on_past_a_decoder_crash_and_records_the_skip(synthetic_root, tmp_path, monkeypatch):
    """The same through train.py, as a user runs it with data.cache=off: the run ends, run_info.json names the clip."""
    from tests.conftest import train_args

    clip = sorted((synthetic_root / "VideoFlash").glob("*.flv"))[7].stem
    inject_faults(monkeypatch, f"crash:{clip}")
    run = tmp_path / "run"
    on_the_fly = ["data.cache=off", "data.num_workers=2", "trainer.max_epochs=1", "logger=none"]
    run_cli(*train_args(synthetic_root, tmp_path, *on_the_fly, f"hydra.run.dir={run}"))
    [crash] = json.loads((run / "run_info.json").read_text())["decoder_crashes"]
    assert crash["clip_id"] == clip and crash["reason"].startswith("decoder crashed in a DataLoader worker")
    assert json.loads((run / "metrics.json").read_text())["n_test"] > 0


def test_functionals_that_crash_or_hang_on_a_file_cost_that_clip_only(four_clips, tmp_path, monkeypatch):
    """openSMILE's functionals in the same isolated workers as prepare: a crash or hang is that clip's skip, the others
    are computed and cached; a crash on the canary too is the environment."""
    from cremad_lit.data.functionals import functionals_features

    crash, hang = (Path(four_clips.iloc[i]["video_path"]).stem for i in (1, 2))
    inject_faults(monkeypatch, f"crash:{crash},hang:{hang}")
    prep = Preprocessing(frames=2, image_size=32)
    features, skipped = functionals_features(four_clips, tmp_path / "egemaps", prep, workers=2, timeout=5)
    reasons = {Path(s["reason"].split(":")[0]).stem: s["reason"].split(": ", 1)[1] for s in skipped}
    assert reasons == {
        crash: "decoder crashed (SIGSEGV)",
        hang: "decoding took longer than data.decode_timeout_s=5 s (stopped)",
    }
    assert sorted(features) == sorted(four_clips["clip_id"][[0, 3]]) and all(
        len(v) == 88 for v in features.values()
    )
    inject_faults(monkeypatch, f"crash:{crash},crash:canary")
    with pytest.raises(BrokenEnvironment, match=r"decoder crashed \(SIGSEGV\).*canary.*fails too"):
        functionals_features(four_clips, tmp_path / "egemaps", prep, workers=2, timeout=30)


def test_the_canary_folder_of_a_killed_worker_is_removed_by_the_next_one():
    """A process killed with SIGKILL (a crashed or timed-out worker) never runs its atexit: its canary folder stays
    until the next process that writes canaries removes it; a live process's folder is left alone."""
    import signal
    import subprocess
    import sys

    from cremad_lit.data import canary

    code = (
        "from cremad_lit.data import canary; print(canary.canary_files('flv', 'wav')[0], flush=True); input()"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    folder = Path(worker.stdout.readline().strip()).parent
    assert folder.is_dir() and folder.name.startswith(f"{canary.FOLDER_PREFIX}{worker.pid}-")
    canary.remove_left_behind()
    assert folder.is_dir()  # its writer is alive
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert folder.is_dir()  # killed: no atexit ran
    canary.remove_left_behind()
    assert not folder.exists()


class _FillsUp:
    """A file whose writes fail with ENOSPC once `budget` files have been written in full."""

    written = 0

    def __init__(self, path, mode, budget):
        self.handle, self.budget = open(path, mode), budget  # noqa: SIM115

    def write(self, data):
        if _FillsUp.written >= self.budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(data)

    def close(self):
        _FillsUp.written += 1
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_a_full_disk_stops_with_the_folder_and_leaves_only_whole_entries(
    synthetic_root, tmp_path, monkeypatch
):
    import cremad_lit.io as io_module

    clips = build_catalog(synthetic_root).head(6)
    cache = ClipCache(tmp_path, Preprocessing(frames=2, image_size=32))
    cache.open()
    _FillsUp.written = 0
    monkeypatch.setattr(io_module, "open", lambda p, m: _FillsUp(p, m, budget=3), raising=False)
    with pytest.raises(
        DiskFull, match=rf"no space left in {cache.dir} to write .*\.npz: .* needed, .* free"
    ) as full:
        cache.build(clips)
    assert "run the same command again" in str(full.value)
    whole = list(cache.dir.glob("*.npz"))
    assert len(whole) == 3 and not list(cache.dir.glob(".*.tmp"))
    for entry in whole:
        cache.load(entry.stem)  # raises DamagedEntry unless whole
    monkeypatch.undo()  # space freed: the same build continues where it stopped
    report = cache.build(clips)
    assert report["decoded_now"] == 3 and report["skipped"] == []
    assert all(cache.has(c) for c in clips["clip_id"])


def test_prepare_estimates_the_cache_and_stops_before_a_disk_that_cannot_hold_it(
    synthetic_root, tmp_path, monkeypatch
):
    """The first entry written measures a clip; a disk with room for fewer than the rest stops the build at once with
    the numbers (nothing more decoded, the entry whole); with room, the report carries the estimate."""
    import cremad_lit.data.cache as cache_module

    clips = build_catalog(synthetic_root).head(6)
    cache = ClipCache(tmp_path, Preprocessing(frames=2, image_size=32))
    monkeypatch.setattr(cache_module, "free_bytes", lambda folder: 3000)
    with pytest.raises(
        DiskFull, match=r"needs about .* for 6 clips \(.* a clip, measured on the first\) .* free"
    ):
        cache.build(clips, workers=0)
    assert len(list(cache.dir.glob("*.npz"))) == 1
    monkeypatch.undo()
    report = cache.build(clips, workers=0)
    entry_bytes = cache.entry(clips["clip_id"].iloc[1]).stat().st_size
    assert report["decoded_now"] == 5 and report["size_estimate"]["clips"] == 5
    assert report["size_estimate"]["bytes_per_clip"] == pytest.approx(entry_bytes, rel=0.5)


def test_a_checkpoint_save_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    import cremad_lit.io as io_module
    from cremad_lit.checkpointing import AtomicCheckpointIO

    saver, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    saver.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    _FillsUp.written = 0
    monkeypatch.setattr(io_module, "open", lambda p, m: _FillsUp(p, m, budget=0), raising=False)
    with pytest.raises(DiskFull, match=rf"no space left in {path.parent} to write last.ckpt"):
        saver.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_a_damaged_cache_entry_is_found_on_load_and_decoded_again(synthetic_root, tmp_path, caplog):
    from cremad_lit.data.dataset import ClipDataset

    clips = build_catalog(synthetic_root).head(3)
    prep = Preprocessing(frames=2, image_size=32)
    cache = ClipCache(tmp_path, prep)
    cache.build(clips)
    clip_id = clips.iloc[1]["clip_id"]
    entry = cache.entry(clip_id)
    original = cache.load(clip_id)
    with zipfile.ZipFile(entry) as archive:  # one byte changed on disk, inside the stored frames
        member = archive.getinfo("frames.npy")
    data = bytearray(entry.read_bytes())
    data[member.header_offset + 30 + len(member.filename) + member.compress_size // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    dataset = ClipDataset(
        clips, prep, ["audio", "video"], (0.5,) * 3, (0.5,) * 3, classes=EMOTIONS, cache=cache
    )
    sample = dataset[1]
    assert "error" not in sample and sample["clip_id"] == clip_id
    assert any(
        "cache entry is damaged" in r.getMessage() and "decoding" in r.getMessage() for r in caplog.records
    )
    repaired = cache.load(clip_id)
    assert all(np.array_equal(repaired[k], original[k]) for k in ("frames", "mel", "waveform"))
    entry.write_bytes(entry.read_bytes()[:100])  # cut short: found on load the same way
    assert "error" not in dataset[1] and cache.load(clip_id)["frames"].shape == original["frames"].shape


def test_a_cache_folder_that_refuses_writes_is_one_clear_error_or_read_as_it_is(
    synthetic_root, tmp_path, monkeypatch
):
    import cremad_lit.data.cache as cache_module

    clips = build_catalog(synthetic_root).head(3)
    prep = Preprocessing(frames=2, image_size=32)
    ClipCache(tmp_path / "complete", prep).build(clips)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache_module, "open", read_only, raising=False)
    report = ClipCache(tmp_path / "complete", prep).build(clips)  # every clip there: read as it is
    assert report["decoded_now"] == 0 and report["clips"] == 3
    empty = ClipCache(tmp_path / "empty", prep)
    empty.dir.mkdir(parents=True)
    (empty.dir / "settings.json").write_text("{}")
    with pytest.raises(NotWritable, match=r"cannot write into .*Read-only file system.*paths.cache_dir"):
        empty.build(clips)


def _can_mount_read_only() -> bool:
    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt && mount -o remount,ro /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_a_read_only_file_system_for_the_cache_and_the_data_root(tmp_path, monkeypatch):
    """Real read-only mounts (a private mount namespace, tests/private_mounts.py): a read-only data root prepares as
    usual; a read-only cache folder ends with one line naming the folder."""
    if not _can_mount_read_only():
        pytest.skip("no private mount namespace here (unshare -m with mount rights is needed)")
    wavs = sorted((SHARED / "cremad-samples" / "AudioWAV").glob("*.wav"))[:4]
    if not wavs:
        pytest.skip(f"the shared real media are not at {SHARED}")
    root, cache, readonly_cache = tmp_path / "root", tmp_path / "cache", tmp_path / "ro-cache"
    (root / "AudioWAV").mkdir(parents=True)
    readonly_cache.mkdir()
    for wav in wavs:
        shutil.copy(wav, root / "AudioWAV" / wav.name)
    use_debug_plugin(monkeypatch, "tests.private_mounts")

    def prepare(read_only: str, cache_dir: Path, run: str):
        monkeypatch.setenv("CREMAD_LIT_TEST_READ_ONLY", read_only)
        # Decoded in the command's own process (no isolated workers): what is tested is where it writes.
        return run_cli(
            *("-m", "cremad_lit", "prepare", f"data.root={root}", "data.modalities=[audio]"),
            "data.prepare_workers=0",
            f"paths.cache_dir={cache_dir}",
            f"hydra.run.dir={tmp_path / run}",
            check=False,
        )

    prepared = prepare(f"bind:{root}", cache, "a")
    assert prepared.returncode == 0 and "4 clips in" in prepared.stdout, prepared.stderr[-3000:]
    stopped = prepare(f"bind:{root},tmpfs:{readonly_cache}", readonly_cache, "b")
    assert stopped.returncode == 1
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write into {readonly_cache}") and "Read-only file system" in last
    assert "Traceback" not in stopped.stderr
    assert not os.path.ismount(root)  # the mounts were the commands' own
