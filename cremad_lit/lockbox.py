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
"""

from __future__ import annotations

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
    """How many occasions of `openings` came before one of `occasion` (None: a new occasion of its own)."""
    named = [o.get("occasion") for o in openings]
    if occasion is not None and occasion in named:
        named = named[: named.index(occasion)]
    return sum(name is None for name in named) + len({name for name in named if name is not None})


def record_opening(
    log_dir: str | Path, corpus: str, speakers: list, entry: dict, occasion: str | None = None
) -> dict:
    """Add one opening to the ledger; {"speakers", "opened_before", "occasion", "ledger"} for metrics.json."""
    path = ledger_path(log_dir, corpus, speakers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = json.loads(path.read_text()) if path.is_file() else {"speakers": speakers, "openings": []}
        before = earlier_occasions(ledger["openings"], occasion)
        ledger["openings"].append({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "occasion": occasion, **entry})
        write_json(path, ledger)
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
