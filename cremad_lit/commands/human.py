"""Human baseline over CREMA-D's crowd votes (voice, face, audio-visual), from the official summary table.

    python -m cremad_lit human /path/to/CREMA-D/processedResults/summaryTable.csv     # over all 7,442 clips

The votes themselves are read by cremad_lit/data/crowd_votes.py, which train.py and evaluate.py also use.
"""

from __future__ import annotations

import sys

from cremad_lit.data.crowd_votes import human_baseline


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m cremad_lit human PATH/TO/summaryTable.csv")
    result = human_baseline(argv[0])
    print(
        f"{result['n_clips']} clips: voice {result['voice']:.1%}, face {result['face']:.1%}, audio-visual {result['audiovisual']:.1%}"
    )


if __name__ == "__main__":
    main()
