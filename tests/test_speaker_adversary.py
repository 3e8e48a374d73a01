"""Speaker-adversarial training (loss.speaker_adversary, cremad_lit/models/adversary.py): the gradient rule by hand,
and a real run whose head trains beside the network and is no part of the model evaluate rebuilds."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from cremad_lit.models.adversary import GradientReversal, SpeakerAdversary, dann_strength
from tests.conftest import TINY, on_synthetic, run_cli, tiny_module


def test_the_reversed_gradient_by_hand():
    torch.manual_seed(0)
    x = torch.randn(4, 3, requires_grad=True)
    weights = torch.randn(4, 3)
    (GradientReversal.apply(x, 0.3) * weights).sum().backward()
    assert torch.allclose(x.grad, -0.3 * weights)
    # The head learns to tell speakers apart as without the reversal; what reaches the embedding is reversed, scaled.
    adversary = SpeakerAdversary(in_features=3, speakers=5, hidden=8)
    speakers = torch.tensor([0, 1, 4, 2])
    reversed_input = x.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(adversary(reversed_input, 0.5), speakers).backward()
    head_grads = [p.grad.clone() for p in adversary.parameters()]
    adversary.zero_grad()
    plain_input = x.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(adversary.head(plain_input), speakers).backward()
    assert torch.allclose(reversed_input.grad, -0.5 * plain_input.grad)
    assert all(torch.allclose(a, p.grad) for a, p in zip(head_grads, adversary.parameters(), strict=True))
    # DANN's ramp: 0 at the start, the weight at the end, rising in between.
    assert dann_strength(0.0, 1.0) == 0.0
    assert dann_strength(1.0, 2.0) == pytest.approx(2.0 * (2 / (1 + math.exp(-10)) - 1))
    assert 0 < dann_strength(0.1, 1.0) < dann_strength(0.5, 1.0) < dann_strength(1.0, 1.0)


def test_settings_that_cannot_work_stop_with_the_reason():
    from cremad_lit.module import EmotionModule
    from cremad_lit.objectives import Mixup, SpeakerAdversarial

    net = tiny_module()[0].net
    with pytest.raises(
        ValueError, match="speaker_adversary needs each clip's own embeddings, but mixup blends"
    ):
        EmotionModule(
            net,
            None,
            classes=("A", "B"),
            objectives={"mixup": Mixup(0.2), "speaker_adversary": SpeakerAdversarial(1.0, 4)},
        )
    with pytest.raises(ValueError, match="two training speakers"):
        SpeakerAdversarial(1.0, training_speakers=1)


@pytest.mark.slow
def test_a_speaker_adversarial_run_trains_and_evaluates_as_the_same_model(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(
        "train.py",
        *on_synthetic(synthetic_root, tmp_path),
        *TINY,
        "logger=none",
        "trainer.max_epochs=2",
        "loss.speaker_adversary=1.0",
        f"hydra.run.dir={run_dir}",
    )
    history = pd.read_csv(run_dir / "history.csv")
    assert history["train/speaker_acc"].between(0, 1).all() and len(history) == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    head = [k for k in checkpoint["state_dict"] if k.startswith("objectives.speaker_adversary.")]
    assert head and checkpoint["hyper_parameters"]["training_speakers"] >= 2
    run_cli("evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}")
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        again["confusion_matrix"] == metrics["confusion_matrix"] and again["accuracy"] == metrics["accuracy"]
    )
