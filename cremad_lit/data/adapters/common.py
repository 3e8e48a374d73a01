"""What every adapter shares: walking a root for media files and recording what is left out, with its reason.

from cremad_lit.data.adapters.common import reject, walk_files
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cremad_lit.data.labels import Rejected

__all__ = ["ON_PURPOSE", "SAME_TAKE", "Rejected", "reject", "walk_files"]
log = logging.getLogger("cremad_lit.data.catalog")

ON_PURPOSE = "left out by data.label_map"
SAME_TAKE = (
    "another file of take"  # a second video of one recording (RAVDESS's 01-/02- twins, a face-cropped copy)
)
NOT_A_CLASS = "not in data.classes"


def walk_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under `root` (any depth, sorted) whose extension is in `extensions`."""
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=True):  # datasets are often symlinked in
        subdirs.sort()
        found += [Path(directory, n) for n in sorted(files) if os.path.splitext(n)[1].lower() in extensions]
    return found


def chosen(reason: str) -> bool:
    """A file left out by a setting (label map, classes, one video per take), not by a problem with it."""
    return ON_PURPOSE in reason or NOT_A_CLASS in reason or reason.startswith(SAME_TAKE)


def reject(rejected: list[dict], path, reason: str, label: str | None = None) -> None:
    """Record a file that is not used; a problem is warned about file by file, a choice (label map, classes, one
    video per take) once in total."""
    if not chosen(reason):
        log.warning("leaving out %s: %s", path, reason)
    rejected.append({"path": str(path), "reason": reason, "label": label})
