"""EDA: the real-name counts through the real command, and the written charts."""

from __future__ import annotations

import json

from PIL import Image

from tests.conftest import run_cli


def test_eda_command_reproduces_the_real_counts(real_names_root, tmp_path):
    out = tmp_path / "eda"
    result = run_cli("-m", "cremad_lit", "eda", f"data.root={real_names_root}", f"hydra.run.dir={out}")
    assert "7442 clips (3512 female, 3930 male), 91 actors, 0 files left out" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_clips"] == 7442 and summary["n_actors"] == 91
    counts = summary["counts"]
    assert counts["emotion"] == {"ANG": 1271, "DIS": 1271, "FEA": 1271, "HAP": 1271, "NEU": 1087, "SAD": 1271}
    assert counts["intensity"] == {"HI": 455, "LO": 455, "MD": 455, "XX": 6077}
    assert counts["gender"] == {"female": 3512, "male": 3930}
    assert counts["statement"]["IEO"] == 1456 and len(counts["statement"]) == 12
    assert all(540 <= n <= 546 for s, n in counts["statement"].items() if s != "IEO")
    for variable in ("statement", "emotion", "intensity", "gender"):
        for kind in ("bar", "pie"):
            with Image.open(out / f"{variable}_{kind}.png") as image:
                assert image.width > 300 and image.height > 200
    assert (out / "crosstab_emotion_intensity.png").is_file() and (
        out / "crosstab_emotion_gender.csv"
    ).is_file()
    report = (out / "report.md").read_text()
    assert "emotion_bar.png" in report and "7,442 clips" in report
    assert "ANG,1271" in (out / "counts.csv").read_text().replace("emotion,", "")
