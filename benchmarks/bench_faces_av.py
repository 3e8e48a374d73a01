"""Does a face add to a voice? RAVDESS actor 05's 44 six-emotion takes (the only real face video here): the speech
recipe trained on other people's voices, the zero-shot FER2013 face model, and the two averaged, on the same takes.

    make bench-faces-av          # or: python benchmarks/bench_faces_av.py  (~6 min on 2 CPU cores; resumes)

The voice: `train.py experiment=speech final=all_speakers` on RAVDESS actors 01-15 without 05 (the lockbox 16-18 stays
out, as everywhere). The face: `baseline method=fer_zero_shot` (nothing trained; face_crop=mtcnn, the default). The
pair: `evaluate.py ckpt_path=[<voice run>,<face run>]`, the voice (its network and ComParE model) and the face weighted
equally. Actor 05's corpus is a folder of links under logs/ to ../shared (its speech wavs beside its face crops; one
clip per take). One person: the intervals resample the takes, which share that person's face and voice, so they are
narrower than the truth; this measures the pipeline, not how it generalises to other people.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from cremad_lit.uncertainty import accuracy_interval, paired_difference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
OUT = REPO / "logs" / "bench-faces-av"
VOICE_ACTORS = [a for a in range(1, 16) if a != 5]  # 01-15 but the face's actor; 16-18 are the lockbox


def link_folders() -> tuple[Path, Path]:
    """logs/bench-faces-av/voice-root (the voices to train on) and actor05 (actor 05's wavs beside its face crops)."""
    voices, actor05 = OUT / "voice-root", OUT / "actor05" / "Actor_05"
    voices.mkdir(parents=True, exist_ok=True)
    actor05.mkdir(parents=True, exist_ok=True)
    for actor in VOICE_ACTORS:
        link = voices / f"Actor_{actor:02d}"
        if not link.exists():
            link.symlink_to(SHARED / "ravdess-speech" / f"Actor_{actor:02d}")
    sources = [
        *(SHARED / "ravdess-speech" / "Actor_05").glob("*.wav"),
        *(SHARED / "ravdess-av-actor05" / "face-crops" / "Actor_05").glob("*.avi"),
    ]
    if len(sources) != 180:
        raise SystemExit(f"actor 05's 60 wavs and 120 face crops not found under {SHARED}")
    for source in sources:
        if not (actor05 / source.name).exists():
            (actor05 / source.name).symlink_to(source)
    return voices, actor05.parent


def run(name: str, *args: str) -> float:
    """One command as a user runs it, logged to OUT/<name>.log; skipped when its folder has its result."""
    done = OUT / name / ("ensemble.json" if name == "voice" else "metrics.json")
    if done.is_file():
        return 0.0
    started = time.perf_counter()
    with open(OUT / f"{name}.log", "w") as log:
        subprocess.run(
            [sys.executable, *args, "logger=none", f"hydra.run.dir={OUT / name}"],
            cwd=REPO,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return time.perf_counter() - started


def by_take(name: str) -> pd.DataFrame:
    """A run's predictions with each take as its own resampling unit (one person: there is no other)."""
    predictions = pd.read_csv(OUT / name / "predictions.csv", dtype={"clip_id": str})
    return predictions.assign(speaker=predictions["clip_id"])


def main() -> None:
    voices, actor05 = link_folders()
    on_actor05 = ["data=ravdess", f"data.root={actor05}", "subset=all"]
    minutes = {
        "voice": run(
            "voice",
            "train.py",
            "experiment=speech",
            "final=all_speakers",
            "data=ravdess",
            f"data.root={voices}",
        ),
        "face": run(
            "face",
            "-m",
            "cremad_lit",
            "baseline",
            "method=fer_zero_shot",
            "data=ravdess",
            f"data.root={actor05}",
        ),
    }
    minutes["eval-voice"] = run("eval-voice", "evaluate.py", f"ckpt_path={OUT / 'voice'}", *on_actor05)
    minutes["eval-pair"] = run(
        "eval-pair", "evaluate.py", f"ckpt_path=[{OUT / 'voice'},{OUT / 'face'}]", *on_actor05
    )
    rows = {
        "voice (experiment=speech)": "eval-voice",
        "face (fer_zero_shot)": "face",
        "voice + face": "eval-pair",
    }
    table = [
        "| model (44 takes) | accuracy [95% over takes] | UAR | macro F1 | recall per emotion |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for label, name in rows.items():
        metrics = json.loads((OUT / name / "metrics.json").read_text())
        interval = accuracy_interval(by_take(name))
        recalls = pd.DataFrame(metrics["confusion_matrix"], index=metrics["classes"])
        recall = {
            c: recalls.loc[c, i] / max(recalls.loc[c].sum(), 1) for i, c in enumerate(metrics["classes"])
        }
        table.append(
            f"| {label} | {metrics['accuracy']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}] | "
            f"{metrics['uar']:.3f} | {metrics['f1_macro']:.3f} | "
            + " ".join(f"{c} {v:.2f}" for c, v in recall.items())
            + " |"
        )
    gains = []
    for other in ("eval-voice", "face"):
        paired = paired_difference(by_take("eval-pair"), by_take(other))
        gains.append(
            f"- voice + face minus {'the voice' if other == 'eval-voice' else 'the face'}: "
            f"{paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}] (paired, over the "
            f"{paired['speakers']} takes)"
        )
    spent = ", ".join(f"{k} {v / 60:.1f} min" for k, v in minutes.items() if v)
    body = "\n".join(
        [
            "## A face beside a voice, on one real actor (`make bench-faces-av`)",
            "",
            f"Machine: {machine()}. RAVDESS actor 05's 44 six-emotion takes (his face crops and speech recordings; "
            "calm and surprised left out, as the voice was trained). The voice: experiment=speech trained on actors "
            "01-15 without 05; the face: FER2013's mini-Xception zero-shot on the aligned faces; the pair: their "
            "probabilities averaged (equal weights, chosen beforehand). One person: the intervals resample his takes, "
            "which share one face and one voice, so they understate the uncertainty about anyone else.",
            "",
            *table,
            "",
            *gains,
            "",
            f"Time this run: {spent or 'all steps reused from an earlier run'}.",
        ]
    )
    print(body)
    print(f"wrote {write_section('faces-av', body)}")


if __name__ == "__main__":
    main()
