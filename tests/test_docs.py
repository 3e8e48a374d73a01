"""The documentation: the site builds with every link checked (mkdocs --strict, as `make docs`), and the README stays a
page a reader finishes (the rest lives in docs/)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_the_site_builds_strictly_and_the_readme_stays_short(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").glob("*/index.html")}
    assert {"extending/index.html", "runs/index.html", "installing/index.html"} <= pages
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
    # every page of docs/ is in the site's navigation (none left unreachable)
    nav = (REPO / "mkdocs.yml").read_text()
    assert all(p.name in nav for p in (REPO / "docs").glob("*.md"))
