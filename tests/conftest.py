"""Shared fixtures: the real CREMA-D metadata and samples in ../shared, and small generated datasets.

make test        # or: .venv/bin/python -m pytest -m "not slow"
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Under pytest-xdist (one worker per core) each worker, and every command it runs, uses one thread: two workers each
# asking torch for every core made the suite slower (measured: 17 min 0 s -> 13 min 22 s on 2 cores).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# No hub is reachable from the suite: every command runs offline, as on an offline cluster. Set before anything imports
# huggingface_hub (it reads them once), so the commands forked from tests/preloaded.py are offline too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch  # noqa: E402

from tests.preloaded import context  # noqa: E402

context()  # the fork server's preloads, set before anything in this process may start it (data/isolation.py)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared"))
META = SHARED / "cremad-meta"
SAMPLES = SHARED / "cremad-samples"
SAMPLE_FLVS = sorted((SAMPLES / "VideoFlash").glob("*.flv"))
RAVDESS = SHARED / "ravdess-speech"
RAVDESS_48K = SHARED / "ravdess-speech-48k"
ASED = SHARED / "ased"


def pytest_collection_modifyitems(items):
    """The slow tests first (in their own order), then the rest: pytest-xdist's workers start on the long ones and the
    short ones fill the end, instead of a long test starting last and running alone (longest first)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _fresh_canary_verdicts():
    """Each test judges failures anew: a test that breaks a library on purpose must not inherit a good verdict."""
    from cremad_lit.data import canary

    canary.forget()


@pytest.fixture(scope="session")
def meta_dir() -> Path:
    if not META.is_dir():
        pytest.skip(f"real CREMA-D metadata not found at {META} (set CREMAD_LIT_SHARED)")
    return META


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLE_FLVS:
        pytest.skip(f"real CREMA-D samples not found at {SAMPLES} (set CREMAD_LIT_SHARED)")
    return SAMPLES


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    if not (RAVDESS / "Actor_01").is_dir():
        pytest.skip(f"RAVDESS speech not found at {RAVDESS} (set CREMAD_LIT_SHARED)")
    return RAVDESS


@pytest.fixture(scope="session")
def ased_dir() -> Path:
    if not (ASED / "manifest.csv").is_file():
        pytest.skip(f"ASED (Amharic speech) not found at {ASED} (set CREMAD_LIT_SHARED)")
    return ASED


def ravdess_emotion(wav: Path) -> str:
    """The emotion name a RAVDESS file's name holds (any of its eight), read with the adapter's own table."""
    from cremad_lit.data.adapters.ravdess import EMOTIONS as RAVDESS_EMOTIONS

    return RAVDESS_EMOTIONS[wav.stem.split("-")[2]]


def six_emotion_wavs(wavs) -> list[Path]:
    """The files of the six emotions RAVDESS shares with CREMA-D (the adapter's default leaves out the others)."""
    from cremad_lit.data.adapters.ravdess import DEFAULT_LABEL_MAP

    return [wav for wav in wavs if ravdess_emotion(wav) not in DEFAULT_LABEL_MAP]


def one_speaker_folder(ravdess_dir: Path, actor: int, folder: Path, every_take: bool = False) -> Path:
    """A folder holding one RAVDESS actor's six-emotion files (symlinks): predict reads a folder as one speaker.
    `every_take`: all 60 of the actor's takes, calm and surprised included, which is the speech a run's speaker
    statistics read (data.speaker_stats=all_speech)."""
    folder.mkdir(parents=True)
    wavs = sorted((ravdess_dir / f"Actor_{actor:02d}").glob("*.wav"))
    for wav in wavs if every_take else six_emotion_wavs(wavs):
        (folder / wav.name).symlink_to(wav)
    return folder


def write_manifest(path: Path, wavs: list[Path], extra_rows: list[dict] | None = None) -> Path:
    """A manifest of RAVDESS wavs (relative paths where possible), with the emotion names and speakers their names
    hold: whatever the folder has, calm and surprised included (a manifest without a label map leaves those out)."""
    import pandas as pd

    rows = [
        {
            "audio_path": os.path.relpath(wav, path.parent),
            "speaker": f"spk{wav.stem[-2:]}",
            "emotion": ravdess_emotion(wav),
            "gender": "m" if int(wav.stem[-2:]) % 2 else "f",
        }
        for wav in wavs
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows + list(extra_rows or [])).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def real_names_root(meta_dir, tmp_path_factory) -> Path:
    """A tree holding the 7,442 real video names as empty placeholder files (names only, as the catalog reads)."""
    root = tmp_path_factory.mktemp("real-names")
    (root / "VideoFlash").mkdir()
    for name in (meta_dir / "VideoFlash.txt").read_text().split():
        (root / "VideoFlash" / name).touch()
    return root


@contextlib.contextmanager
def once_per_suite(tmp_path_factory, name: str):
    """A folder made once per suite run and shared by pytest-xdist's workers: the first worker to get here builds it
    (the caller, inside this block, when `done` does not exist yet; it writes `done` last) while the others wait, then
    read it. What the tests read from a session fixture, every worker would otherwise make again."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's base is a folder of the run's
        shared = shared.parent
    folder = shared / name
    with FileLock(str(shared / f"{name}.lock")):
        folder.mkdir(exist_ok=True)
        yield folder, folder / ".done"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """6 actors (3 male, 3 female) x the IEO statement: 96 real flv + wav clips in the official layout."""
    from cremad_lit.data.synthetic import generate

    with once_per_suite(tmp_path_factory, "synthetic") as (folder, done):
        if not done.exists():
            generate(folder / "cremad", actors=6, sentences=1, seed=0, workers=2)
            done.touch()
    return folder / "cremad"


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory) -> Path:
    from cremad_lit.data.synthetic import generate

    with once_per_suite(tmp_path_factory, "kaggle") as (folder, done):
        if not done.exists():
            generate(folder / "cremad", actors=2, sentences=1, seed=1, layout="kaggle", workers=2)
            done.touch()
    return folder / "cremad"


# A real Trainer run of the tiny model on 2 frames of 32 px takes seconds.
TINY = [
    "model=tiny",
    "trainer=cpu",
    "data.preprocessing.frames=2",
    "model.video_backbone.input_size=32",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.pin_memory=false",
    "data.prepare_workers=0",
    "data.batch_size=8",
]


def use_debug_plugin(monkeypatch, module: str, on: bool = True) -> None:
    """Commands started from now on load (or no longer load) the test plugin `module`, beside any others: the debug
    setting CREMAD_LIT_DEBUG_PLUGINS (errors.py)."""
    from cremad_lit.errors import DEBUG_PLUGINS

    plugins = [p for p in os.environ.get(DEBUG_PLUGINS, "").split(",") if p and p != module]
    plugins += [module] if on else []
    if plugins:
        monkeypatch.setenv(DEBUG_PLUGINS, ",".join(plugins))
    else:
        monkeypatch.delenv(DEBUG_PLUGINS, raising=False)


def inject_faults(monkeypatch, faults: str) -> None:
    """Worker processes started from now on crash or hang on the named files ("crash:<stem>,hang:<stem>"): the test
    plugin tests/faults.py."""
    use_debug_plugin(monkeypatch, "tests.faults")
    monkeypatch.setenv("CREMAD_LIT_TEST_FAULTS", faults)


def kill_at(monkeypatch, spec: str | None) -> None:
    """Commands started from now on SIGKILL themselves at the write `spec` names ("<file>:<n>:<before|while|after>
    [:tree]", tests/kill_points.py); None: no kill."""
    use_debug_plugin(monkeypatch, "tests.kill_points", on=spec is not None)
    if spec is None:
        monkeypatch.delenv("CREMAD_LIT_TEST_KILL", raising=False)
    else:
        monkeypatch.setenv("CREMAD_LIT_TEST_KILL", spec)


@pytest.fixture
def fork_subcommands(monkeypatch) -> None:
    """The commands a command starts (select's multiruns, bench_lockbox.py's runs) are forked from it, not new
    interpreters (tests/fork_commands.py): what they do is the same, ~8 s of imports each sooner."""
    use_debug_plugin(monkeypatch, "tests.fork_commands")


@pytest.fixture(scope="session")
def six_actors(ravdess_dir, tmp_path_factory) -> tuple[Path, Path]:
    """RAVDESS actors 01-06 (a root of symlinked folders) and one cache beside it, shared by every test that trains on
    them, across pytest-xdist's workers too: their clips are decoded and their functionals computed once per suite,
    as two jobs of a parallel sweep share a cache (its builds take a lock, its entries are written atomically)."""
    from tests.test_corpora import link_actors

    with once_per_suite(tmp_path_factory, "six-actors") as (folder, done):
        if not done.exists():
            link_actors(ravdess_dir, folder / "ravdess", range(1, 7))
            done.touch()
    return folder / "ravdess", folder / "cache"


def on_six_actors(six_actors: tuple[Path, Path], tmp: Path) -> list[str]:
    """`common` for the shared six actors: their root and cache, this test's logs."""
    root, cache = six_actors
    return [
        f"data.root={root}",
        f"paths.cache_dir={cache}",
        f"paths.log_dir={tmp / 'logs'}",
        "data.generate=null",
    ]


def on_synthetic(root: Path, tmp: Path) -> list[str]:
    """`common` for the suite's synthetic corpus with its one cache beside it (as `on_six_actors`), for the tests
    that train on it without testing the cache: its clips are decoded and their faces found once per suite."""
    return common(root, tmp, cache=root.parent / "cache")


def common(root: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    """Data, cache and logs of a test run, all under `tmp` (the cache elsewhere if given)."""
    return [
        f"data.root={root}",
        f"paths.cache_dir={cache or tmp / 'cache'}",
        f"paths.log_dir={tmp / 'logs'}",
        "data.generate=null",
    ]


def train_args(root: Path, tmp: Path, *extra: str, shared_cache: bool = False) -> list[str]:
    """train.py with the tiny CPU settings; a "-m" among `extra` moves to the front, where Hydra's flags must be.
    `shared_cache`: the synthetic corpus's one cache (`on_synthetic`), not one of the test's own."""
    flags = [e for e in extra if e.startswith("-")]
    data = on_synthetic(root, tmp) if shared_cache else common(root, tmp)
    return ["train.py", *flags, *data, *TINY, *(e for e in extra if not e.startswith("-"))]


def run_cli(
    *args: str,
    cwd: Path | None = None,
    timeout: int = 900,
    check: bool = True,
    env: dict | None = None,
    fresh: bool = False,
    python_path: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a project command the way a user does (a fresh process), returning its output.

    The process is forked from one with torch and Lightning imported (tests/preloaded.py), which saves ~8 s a
    command; with an `env` that changes the suite's environment (variables read at import time) or `fresh=True` it
    is a new interpreter from the start. `python_path`: PYTHONPATH for the command, forked or not.
    """
    full_env = {
        **os.environ,
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "1",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    started = time.monotonic()
    same_environment = all(os.environ.get(name) == value for name, value in (env or {}).items())
    # PYTHONPATH is read as an interpreter starts: a forked command puts these folders first on its path instead.
    if python_path:
        full_env["PYTHONPATH"] = python_path
    if same_environment and not fresh and os.environ.get("CREMAD_LIT_TEST_FRESH") != "1":
        from tests.preloaded import run_forked

        with tempfile.TemporaryDirectory(prefix="cli-") as out:
            returncode, stdout, stderr = run_forked(list(args), full_env, cwd or REPO, timeout, Path(out))
        result = subprocess.CompletedProcess([sys.executable, *args], returncode, stdout, stderr)
    else:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=cwd or REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )
    if log := os.environ.get("CREMAD_LIT_TEST_COMMAND_LOG"):  # where a test's time goes, command by command
        with open(log, "a") as times:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
            times.write(f"{time.monotonic() - started:7.1f}\t{test}\t{' '.join(args)[:300]}\n")
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(args)}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def tiny_module(overrides: list[str] = TINY, seed: int = 0):
    """An untrained tiny network built in this process from the composed train config, and that config."""
    from hydra import compose, initialize_config_dir

    from cremad_lit.module import EmotionModule
    from cremad_lit.pipeline import build_net

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    torch.manual_seed(seed)
    from cremad_lit.data.labels import EMOTIONS

    return EmotionModule(build_net(cfg.model, EMOTIONS), optimizer=None, classes=EMOTIONS).eval(), cfg


@pytest.fixture(scope="session")
def trained_run(synthetic_root, tmp_path_factory):
    """One real fit + test of the tiny model with the default logger (W&B, offline): the suite's one trained run, and
    the command's output. Tests write beside it (in `tmp`), each into a folder of its own."""
    args = ["train.py", "trainer.max_epochs=2"]
    with once_per_suite(tmp_path_factory, "train") as (tmp, done):
        run_dir = tmp / "run"
        if not done.exists():
            result = run_cli(*args, *on_synthetic(synthetic_root, tmp), *TINY, f"hydra.run.dir={run_dir}")
            (tmp / "stdout.txt").write_text(result.stdout)
            (tmp / "stderr.txt").write_text(result.stderr)
            done.touch()
    output = [(tmp / f"{stream}.txt").read_text() for stream in ("stdout", "stderr")]
    return run_dir, subprocess.CompletedProcess(args, 0, *output), tmp


@pytest.fixture(scope="session")
def tiny_checkpoint(trained_run) -> Path:
    """The trained run's tested checkpoint: a tiny audio-visual model to predict, export and serve with."""
    return next((trained_run[0] / "checkpoints").glob("epoch*.ckpt"))


def read_wandb_log(path: Path) -> list:
    """The protobuf records of an offline W&B run's `run-*.wandb` file (what `wandb sync` uploads).

    The file is a ':W&B' header followed by LevelDB-style log records (32 KiB blocks; each record: crc32, 2-byte
    length, type 1 full / 2 first / 3 middle / 4 last) whose payloads are `wandb_internal_pb2.Record`s.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # too little room for a header: the rest of the block is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            payload, pending = pending + chunk, b""
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
        elif kind in (2, 3):
            pending += chunk
    return records
