"""Exploratory data analysis of a corpus (the paper's Section III-C), as charts and one report page.

    python -m cremad_lit eda data.root=/path/to/CREMA-D
    python -m cremad_lit eda data=synthetic                    # the built-in dataset (generated if missing)
    python -m cremad_lit eda data=ravdess data.root=../shared/ravdess-speech

Writes into its run dir: summary.json (clip and actor counts, counts per statement, emotion, intensity, gender),
counts.csv, a bar and a pie chart per variable, emotion x intensity and emotion x gender cross-tabs, the files left
out (per original label and reason: RAVDESS's calm and surprised, bad names) and report.md. Names only: nothing is decoded.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cremad_lit.data.corpus import Corpus, check_data_root
from cremad_lit.exploration import write_eda


@hydra.main(version_base="1.3", config_path="../conf", config_name="eda")
def main(cfg: DictConfig) -> None:
    check_data_root(cfg.data)
    # every clip, whatever media it has (data=synthetic: the missing ones generated first)
    clips = Corpus.from_config(cfg.data, modalities=None).catalog()
    out = Path(cfg.paths.output_dir)
    summary = write_eda(clips, out, str(cfg.data.get("manifest") or cfg.data.root))
    genders = ", ".join(f"{n} {g}" for g, n in summary["counts"]["gender"].items())
    print(
        f"{summary['n_clips']} clips ({genders}), {summary['n_actors']} actors, "
        f"{summary['left_out']['files']} files left out; EDA report: {(out / 'report.md').resolve()}"
    )


if __name__ == "__main__":
    main()
