"""The suite's command runner (tests/preloaded.py): a forked command behaves as a fresh `python` process.

.venv/bin/python -m pytest tests/test_preloaded.py
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import run_cli

SCRIPT = """
import os, sys, tempfile
import wandb.sdk.data_types._private as media  # W&B makes its media folder once, at import
own = tempfile.TemporaryDirectory()  # this command's own: removed when it exits, as in any process
print(media.MEDIA_TMP.name, own.name, os.getpid(), sys.argv[1:], os.getcwd(), os.environ.get("GREETING"))
sys.exit(int(sys.argv[1]))
"""


def test_a_forked_command_is_a_process_of_its_own(tmp_path, monkeypatch):
    script = tmp_path / "command.py"
    script.write_text(SCRIPT)
    monkeypatch.setenv("GREETING", "hello")
    first = run_cli(str(script), "0", cwd=tmp_path)
    shared, own, pid, argv, cwd, greeting = first.stdout.split(maxsplit=5)
    assert (
        pid != str(os.getpid()) and cwd == str(tmp_path) and argv == "['0']" and greeting.strip() == "hello"
    )
    assert Path(shared).is_dir()  # a folder the server made at import outlives the command that exited
    assert not Path(own).exists()  # the command's own temporary folder went with it
    failed = run_cli(str(script), "3", cwd=tmp_path, check=False)
    assert failed.returncode == 3 and failed.stdout.split()[0] == shared and Path(shared).is_dir()
