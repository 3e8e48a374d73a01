"""The lockbox ledger: every opening of a held-out set of speakers, so a number from a lockbox opened more than once
is never mistaken for an unbiased one.

    python train.py ... split.lockbox=[16,17,18]            # those speakers leave every protocol and command
    python evaluate.py ckpt_path=<run> subset=lockbox         # opens it: recorded here, counted in metrics.json

The ledger is `<paths.log_dir>/lockbox/<corpus>-<speakers>.json`, one per corpus copy and lockbox: when, which
evaluation run, which checkpoint or ensemble, and the accuracy seen. metrics.json's `lockbox.opened_before` says how
many openings came before this one; `report` marks every number whose lockbox had been opened before.

Several models opened together, after every choice was made (a release's table: the model to ship and the rows it
is compared with), are one opening when they share `lockbox_occasion=NAME`: nothing seen in one of them could have
shaped another. An occasion already in the ledger does not reopen; a new one counts every earlier occasion (an
opening without a name is its own occasion).

An opening is written ahead as pending, before any number is written, and completed once metrics.json is: an evaluation
killed in between leaves a pending entry that counts for nothing, and the same command run again into the same run
folder takes that entry over, so an opening is recorded once and only when it completed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

from cremad_lit.io import write_json

try:
    import fcntl
except ImportError:  # Windows: no lock; two evaluations at the same moment could then record one opening
    fcntl = None

log = logging.getLogger(__name__)


def ledger_path(log_dir: str | Path, corpus: str, speakers: list) -> Path:
    digest = hashlib.sha1(json.dumps([str(s) for s in speakers]).encode()).hexdigest()[:8]
    return Path(log_dir) / "lockbox" / f"{corpus}-{digest}.json"


def earlier_occasions(openings: list[dict], occasion: str | None) -> int:
    """How many occasions of `openings` came before one of `occasion` (None: a new occasion of its own); pending
    openings (never completed) do not count."""
    named = [o.get("occasion") for o in openings if o.get("completed", True)]
    if occasion is not None and occasion in named:
        named = named[: named.index(occasion)]
    return sum(name is None for name in named) + len({name for name in named if name is not None})


def record_opening(
    log_dir: str | Path, corpus: str, speakers: list, entry: dict, occasion: str | None = None
) -> dict:
    """Add one opening to the ledger, pending until `complete_opening`; {"speakers", "opened_before", "occasion",
    "ledger"} for metrics.json. `entry["run"]` names the evaluation's folder: a pending opening of that folder (a
    killed evaluation's) is taken over, not counted again."""
    path = ledger_path(log_dir, corpus, speakers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        ledger = json.loads(path.read_text()) if path.is_file() else {"speakers": speakers, "openings": []}
        openings = [o for o in ledger["openings"] if o.get("completed", True) or o.get("run") != entry["run"]]
        before = earlier_occasions(openings, occasion)
        openings.append(
            {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "occasion": occasion, **entry, "completed": False}
        )
        write_json(path, {**ledger, "openings": openings})
    if before:
        log.warning(
            "the lockbox %s had been opened %d time(s) before (%s): a choice made after seeing it makes this number "
            "optimistic; report marks it",
            speakers,
            before,
            path,
        )
    return {
        "speakers": speakers,
        "opened_before": before,
        "occasion": occasion,
        "ledger": str(path.resolve()),
    }


def complete_opening(ledger: str | Path, run: str, accuracy: float) -> None:
    """Mark the pending opening of evaluation folder `run` completed (its metrics.json is written), with its accuracy."""
    path = Path(ledger)
    with _locked(path):
        stored = json.loads(path.read_text())
        for opening in stored["openings"]:
            if opening.get("run") == run and not opening.get("completed", True):
                opening.update(completed=True, accuracy=accuracy)
        write_json(path, stored)


@contextlib.contextmanager
def _locked(path: Path):
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
