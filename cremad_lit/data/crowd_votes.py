"""CREMA-D's crowd votes: how often the raters recognised the acted emotion, on the same clips as the model.

    python -m cremad_lit human /path/to/CREMA-D/processedResults/summaryTable.csv     # the command (commands/human.py)

The official dataset ships `processedResults/summaryTable.csv`: each clip's majority vote when raters heard the voice
alone, saw the face alone, or saw and heard both. A vote counts as correct only when it is the acted emotion alone (a tie
such as `A:N` does not). Over all clips: voice 41.6%, face 66.3%, audio-visual 72.2%. train.py and evaluate.py add this to
metrics.json (and `human_vs_model.csv`/`.png`) whenever the dataset root holds the table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cremad_lit.data.labels import EMOTIONS

VOTE_LETTERS = {"A": "ANG", "D": "DIS", "F": "FEA", "H": "HAP", "N": "NEU", "S": "SAD"}
CHANNELS = {"voice": "VoiceVote", "face": "FaceVote", "audiovisual": "MultiModalVote"}
TABLE = Path("processedResults") / "summaryTable.csv"


def find_summary_table(root: str | Path) -> Path | None:
    path = Path(root) / TABLE
    return path if path.is_file() else None


def load_votes(path: str | Path) -> pd.DataFrame:
    """One row per clip: clip_id, emotion and, per channel, whether the majority vote was the acted emotion alone."""
    table = pd.read_csv(path)
    votes = pd.DataFrame({"clip_id": table["FileName"].astype(str)})
    votes["emotion"] = votes["clip_id"].str.split("_").str[2]
    for channel, column in CHANNELS.items():
        votes[channel] = table[column].astype(str).map(VOTE_LETTERS).eq(votes["emotion"])
    return votes.set_index("clip_id")


def human_baseline(path: str | Path, clip_ids=None) -> dict:
    """Accuracy of the crowd's vote per channel, overall and per emotion, over `clip_ids` (all clips if None)."""
    votes = load_votes(path)
    if clip_ids is not None:
        votes = votes[votes.index.isin(list(clip_ids))]
    per_class = {
        emotion: {channel: float(group[channel].mean()) for channel in CHANNELS}
        for emotion, group in votes.groupby("emotion")
        if emotion in EMOTIONS
    }
    return {
        "n_clips": int(len(votes)),
        **{channel: float(votes[channel].mean()) for channel in CHANNELS},
        "per_class": per_class,
    }


def compare_with_model(baseline: dict, confusion_matrix) -> pd.DataFrame:
    """Per emotion: the model's recall beside the crowd's accuracy for voice, face and both."""
    rows = []
    for i, emotion in enumerate(EMOTIONS):
        support = sum(confusion_matrix[i])
        human = baseline["per_class"].get(emotion, {})
        rows.append(
            {
                "emotion": emotion,
                "model": confusion_matrix[i][i] / support if support else float("nan"),
                **{f"human_{c}": human.get(c, float("nan")) for c in CHANNELS},
            }
        )
    return pd.DataFrame(rows).set_index("emotion")
