"""Test-only decoder faults, loaded into worker processes by the debug setting (errors.py):

    CREMAD_LIT_DEBUG_PLUGINS=tests.faults CREMAD_LIT_TEST_FAULTS="crash:<file stem>,hang:<file stem>"

Every decode of a file with that stem (its video or its WAV; `canary` for the canary's files) kills its process with
SIGSEGV, as a decoder bug does, or hangs. It wraps the media module's file check, which every decoder calls first.
Imported by a test process itself it does nothing; tests set it up with `inject_faults` (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from cremad_lit.data import media

VARIABLE = "CREMAD_LIT_TEST_FAULTS"
FAULTS = {
    name: kind for kind, _, name in (f.partition(":") for f in os.environ.get(VARIABLE, "").split(",") if f)
}
_check_file = media._check_file


def _check_file_with_faults(path: str) -> None:
    fault = FAULTS.get(Path(path).stem)
    if fault == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        time.sleep(3600)
    _check_file(path)


if FAULTS:
    media._check_file = _check_file_with_faults
