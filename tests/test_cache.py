"""Prepared cache: reuse, new key on new settings, parallel build, and a real kill mid-build that resumes cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from cremad_lit.data.cache import ClipCache
from cremad_lit.data.catalog import build_catalog
from cremad_lit.data.features import Preprocessing, extract_clip
from tests.conftest import run_cli


def test_build_reuse_and_new_settings(synthetic_root, tmp_path):
    clips = build_catalog(synthetic_root).head(12)
    prep = Preprocessing(frames=2, image_size=32)
    first = ClipCache(tmp_path, prep).build(clips, workers=2)
    assert first["decoded_now"] == 12 and not first["skipped"]
    again = ClipCache(tmp_path, Preprocessing(frames=2, image_size=32)).build(clips)
    assert again["decoded_now"] == 0
    other = ClipCache(tmp_path, Preprocessing(frames=3, image_size=32))
    assert other.dir != ClipCache(tmp_path, prep).dir
    assert other.build(clips)["decoded_now"] == 12
    stored = ClipCache(tmp_path, prep).load(clips.clip_id[0])
    fresh = extract_clip(clips.video_path[0], clips.audio_path[0], prep)
    assert stored["frames"].dtype == np.uint8 and stored["mel"].dtype == np.float16
    assert np.array_equal(stored["frames"], fresh["frames"]) and np.array_equal(stored["mel"], fresh["mel"])


def test_a_build_clears_the_files_of_killed_writers_only(synthetic_root, tmp_path):
    """A writer killed mid-write leaves `.<entry>.<pid>.tmp`: the next build removes it; a live writer's stays."""
    cache = ClipCache(tmp_path, Preprocessing(frames=2, image_size=32))
    cache.open()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = cache.dir / f".1001_DFA_ANG_XX.npz.{int(dead.stdout)}.tmp"
    live = cache.dir / f".1001_DFA_DIS_XX.npz.{os.getpid()}.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    cache.build(build_catalog(synthetic_root).head(2))
    assert not stale.exists() and live.exists()


def test_killed_build_leaves_whole_entries_and_resumes(synthetic_root, tmp_path):
    prep = Preprocessing(frames=8, image_size=96)
    cache = ClipCache(tmp_path, prep)
    code = (
        "import sys; from cremad_lit.data.cache import ClipCache; from cremad_lit.data.catalog import build_catalog;"
        "from cremad_lit.data.features import Preprocessing;"
        f"ClipCache({str(tmp_path)!r}, Preprocessing(frames=8, image_size=96)).build(build_catalog({str(synthetic_root)!r}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.dir.glob("*.npz"))) < 5:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = sorted(cache.dir.glob("*.npz"))
    assert 5 <= len(done) < 96, "the kill should land mid-build"
    for entry in done:  # every visible entry is whole
        with np.load(entry) as stored:
            assert stored["frames"].shape == (8, 96, 96, 3) and stored["mel"].shape == (1, 64, 128)
    report = cache.build(build_catalog(synthetic_root))
    assert report["decoded_now"] == 96 - len(done)
    assert len(list(cache.dir.glob("*.npz"))) == 96
    assert not [p for p in cache.dir.iterdir() if p.name.endswith(".tmp")]


def test_prepare_command_writes_report(synthetic_root, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "-m",
        "cremad_lit",
        "prepare",
        f"data.root={synthetic_root}",
        "model=tiny",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.preprocessing.frames=2",
        "data.prepare_workers=2",
        f"hydra.run.dir={out}",
    )
    assert "96 clips in" in result.stdout and "0 skipped" in result.stdout
    assert (out / "prepare_report.json").is_file()
    [corpus_dir] = (tmp_path / "cache").iterdir()  # one namespace per corpus copy, one folder per settings
    assert corpus_dir.name.startswith("cremad-")
    [key_dir] = corpus_dir.iterdir()
    assert '"image_size": 96' in (key_dir / "settings.json").read_text()  # the tiny model's frame size


def _build_in_process(cache_dir: str, root: str, count: int) -> int:
    clips = build_catalog(root).head(count)
    return ClipCache(cache_dir, Preprocessing(frames=2, image_size=32)).build(clips)["decoded_now"]


def test_parallel_builders_wait_for_each_other(synthetic_root, tmp_path):
    """Two jobs of a parallel sweep starting at once: one decodes, the other waits and finds everything cached."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        decoded = pool.starmap(_build_in_process, [(str(tmp_path), str(synthetic_root), 6)] * 2)
    assert sorted(decoded) == [0, 6]
