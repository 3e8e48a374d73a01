"""Modality balance (balance.py): the masked-modality diagnostics are real evaluations of the fused head (a head that
ignores the face scores chance with the face alone), each method's gradient rule against a hand computation, and every
method training end to end through train.py."""

from __future__ import annotations

import json
import math

import lightning as L
import pandas as pd
import pytest
import torch
from torch import nn

from cremad_lit.balance import (
    MODALITIES,
    OGMGE,
    PMR,
    AuxiliaryHeads,
    MMPareto,
    ModalityDropout,
    ModalityProbe,
    min_norm_weights,
    ogm_coefficients,
    pareto_integrate,
    pareto_rescale,
)
from cremad_lit.module import EmotionModule
from cremad_lit.pipeline import build_datamodule, model_inputs
from cremad_lit.predictors import load_checkpoint, model_from_checkpoint
from tests.conftest import TINY, on_synthetic, run_cli


class TwoBranchNet(nn.Module):
    """The smallest audio-visual net with the interface balance.py reads: one linear encoder per modality."""

    def __init__(self, classes: int = 3, size: int = 2):
        super().__init__()
        self.video, self.audio = nn.Linear(4, size), nn.Linear(4, size)
        self.fusion_layer = nn.Linear(2 * size, classes)
        self.embedding_sizes, self.embedding_modalities, self.modalities = (
            [size, size],
            ["video", "audio"],
            MODALITIES,
        )

    def embed(self, batch):
        return [self.video(batch["frames"]), self.audio(batch["mel"])]

    def fusion(self, embeddings):
        return self.fusion_layer(torch.cat(embeddings, dim=1))

    def forward(self, batch):
        return self.fusion(self.embed(batch))

    def encoder_parameters(self):
        return {"video": list(self.video.parameters()), "audio": list(self.audio.parameters())}


def batch_of(n: int = 12, classes: int = 3, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.randn(n, 4, generator=generator),
        "mel": torch.randn(n, 4, generator=generator),
        "label": torch.arange(n) % classes,
    }


def test_a_head_that_ignores_the_face_scores_chance_with_the_face_alone():
    """The probe runs the fused head with the other modality at its training mean: a head whose weights read only the
    voice gets the fused accuracy from the voice alone and, from the face alone, one constant prediction (the share of
    that class: chance on balanced labels); the imbalance ratio is far above 1."""
    classes, n = 3, 30
    labels = torch.arange(n) % classes
    audio = nn.functional.one_hot(labels, classes).float() * 5  # the voice says the class
    video = torch.randn(n, classes, generator=torch.Generator().manual_seed(1))  # the face says nothing
    fusion_layer = nn.Linear(2 * classes, classes)
    with torch.no_grad():
        fusion_layer.weight[:, :classes] = 0  # the head ignores the face
        fusion_layer.weight[:, classes:] = torch.eye(classes)
        fusion_layer.bias.zero_()

    class Net:
        embedding_modalities = ["video", "audio"]

    probe = ModalityProbe(Net())
    probe.observe([video[:15], audio[:15]])  # "training" batches: the means come from them
    probe.observe([video[15:], audio[15:]])
    fusion = lambda embeddings: fusion_layer(torch.cat(embeddings, dim=1))  # noqa: E731
    probe.evaluate(fusion, [video, audio], labels)
    module = L.LightningModule()
    results = probe.results(module, n)
    assert results["acc_only_audio"] == 1.0
    assert results["acc_only_video"] == pytest.approx(1 / classes)  # one class for every clip: its share
    assert results["imbalance_audio_video"] > 2
    # the masked logits are the head's own: with the face at its mean they are the fused logits (it ignores the face)
    masked = probe.masked_logits(fusion, [video, audio], "audio")
    assert torch.allclose(masked, fusion([video, audio]))


def test_ogm_ge_coefficients_and_gradient_rule_by_hand():
    """OGM-GE: the dominant modality's coefficient is 1 - tanh(alpha (rho - 1)), the other's 1; without noise the
    encoder gradients are exactly scaled; with noise they get noise of their own std, the same on every call at a step
    (what keeps DDP ranks in step)."""
    coefficients = ogm_coefficients(3.0, 1.0, 0.8)
    assert coefficients == {"audio": pytest.approx(1 - math.tanh(0.8 * 2)), "video": 1.0}
    assert ogm_coefficients(1.0, 4.0, 0.5) == {"audio": 1.0, "video": pytest.approx(1 - math.tanh(0.5 * 3))}
    net = TwoBranchNet()
    rule = OGMGE(alpha=0.8, noise=False)
    module = type("Module", (), {"global_step": 7, "net": net, "classes": ("a", "b", "c")})()
    rule.setup(module)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    rule.coefficients = {"audio": 0.25, "video": 1.0}
    rule.after_backward(module)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in net.audio.parameters())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in net.video.parameters())
    assert torch.equal(
        net.fusion_layer.weight.grad, torch.ones_like(net.fusion_layer.weight)
    )  # the head: untouched
    noisy = OGMGE(alpha=0.8, noise=True)
    noisy.setup(module)
    grads = []
    for _ in range(2):
        net.audio.weight.grad = torch.linspace(-1, 1, 8).view(2, 4)
        noisy.coefficients = {"audio": 0.5, "video": 1.0}
        noisy.after_backward(module)
        grads.append(net.audio.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])  # the same noise at the same step
    noise = grads[0] - 0.5 * torch.linspace(-1, 1, 8).view(2, 4)
    assert noise.abs().sum() > 0


def test_mmpareto_integration_by_hand():
    """Agreeing gradients: equal weights, 2 x their mean is the plain sum, times gamma. Conflicting (1, 0) and (-1, 1):
    the least-norm weights 0.6 / 0.4 give 2 x (0.2, 0.4), enlarged to the plain sum's norm 1, times gamma."""
    assert min_norm_weights(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])) == pytest.approx((0.6, 0.4))
    agree, cosine = pareto_integrate(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert cosine > 0 and torch.allclose(agree, torch.tensor([2.0, 1.0]))
    assert torch.allclose(pareto_rescale(agree, torch.tensor([2.0, 1.0]), 1.5), torch.tensor([3.0, 1.5]))
    conflict, cosine = pareto_integrate(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert cosine < 0 and torch.allclose(conflict, torch.tensor([0.4, 0.8]))
    final = pareto_rescale(conflict, torch.tensor([0.0, 1.0]), 1.5)
    assert torch.allclose(final, torch.tensor([0.4, 0.8]) / math.sqrt(0.8) * 1.5)


def test_mmpareto_sets_each_encoders_gradient_from_its_two_losses():
    """On a real backward pass the encoders get the integration of the fused and their own unimodal loss's
    gradients (computed here separately by autograd); the heads keep the plain sum."""
    torch.manual_seed(0)
    net, batch = TwoBranchNet(), batch_of()
    module = EmotionModule(
        net, optimizer=None, classes=("a", "b", "c"), objectives={"balance": MMPareto(gamma=1.5)}
    )
    rule = module.objectives["balance"]
    embeddings = net.embed(batch)
    fused = module.criterion(net.fusion(embeddings), batch["label"])
    unimodal = rule.unimodal_losses(module, embeddings, batch["label"])
    expected = {}
    for modality, parameters in net.encoder_parameters().items():

        def flat(loss, ps=parameters):
            return torch.cat([g.flatten() for g in torch.autograd.grad(loss, ps, retain_graph=True)])

        combined, _ = pareto_integrate(flat(fused), flat(unimodal[modality]))
        expected[modality] = combined
    module.log = lambda *args, **kwargs: None
    loss = rule.loss(module, batch, net.embed(batch))
    loss.backward()
    plain = {m: [p.grad.clone() for p in ps] for m, ps in net.encoder_parameters().items()}
    head_grad = net.fusion_layer.weight.grad.clone()
    rule.after_backward(module)
    for modality, parameters in net.encoder_parameters().items():
        start = 0
        for parameter, before in zip(parameters, plain[modality], strict=True):
            piece = expected[modality][start : start + parameter.numel()].view_as(parameter)
            start += parameter.numel()
            assert torch.allclose(parameter.grad, pareto_rescale(piece, before, 1.5), atol=1e-6)
    assert torch.equal(net.fusion_layer.weight.grad, head_grad)


def test_aux_heads_pmr_and_modality_dropout_losses_by_hand():
    torch.manual_seed(0)
    net, batch = TwoBranchNet(), batch_of()
    module = EmotionModule(
        net, optimizer=None, classes=("a", "b", "c"), objectives={"balance": AuxiliaryHeads(weight=0.5)}
    )
    module.log = lambda *args, **kwargs: None
    embeddings = net.embed(batch)
    fused = module.criterion(net.fusion(embeddings), batch["label"])
    heads = module.objectives["balance"].heads
    by_hand = fused + 0.5 * sum(
        nn.functional.cross_entropy(heads[m](embeddings[i]), batch["label"])
        for m, i in (("video", 0), ("audio", 1))
    )
    assert torch.allclose(module.objectives["balance"].loss(module, batch, embeddings), by_hand)
    # PMR: the first batch sets the prototypes (class means); the weaker modality's prototype loss gets
    # tanh(alpha (rho - 1)) with rho the stronger's score over the weaker's.
    pmr_module = EmotionModule(
        TwoBranchNet(), optimizer=None, classes=("a", "b", "c"), objectives={"balance": PMR(alpha=1.0)}
    )
    logged = {}
    pmr_module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    embeddings = pmr_module.net.embed(batch)
    pmr_module.objectives["balance"].loss(pmr_module, batch, embeddings)
    for m, i in (("video", 0), ("audio", 1)):
        means = torch.stack([embeddings[i][batch["label"] == k].mean(dim=0) for k in range(3)]).detach()
        assert torch.allclose(getattr(pmr_module.objectives["balance"], f"prototypes_{m}"), means, atol=1e-6)
    scores = {}
    for m, i in (("video", 0), ("audio", 1)):
        logits = -(
            torch.cdist(embeddings[i].detach(), getattr(pmr_module.objectives["balance"], f"prototypes_{m}"))
            ** 2
        )
        scores[m] = float(logits.softmax(dim=1).gather(1, batch["label"][:, None]).sum())
    weaker = "video" if scores["audio"] > scores["video"] else "audio"
    ratio = max(scores.values()) / min(scores.values())
    assert logged[f"train/balance_weight_{weaker}"] == pytest.approx(math.tanh(ratio - 1), rel=1e-5)
    # modality dropout with p=1: every clip keeps exactly one modality
    seen = []
    dropout_module = EmotionModule(
        TwoBranchNet(),
        optimizer=None,
        classes=("a", "b", "c"),
        objectives={"balance": ModalityDropout(p=1.0)},
    )
    net = dropout_module.net
    original = net.fusion
    net.fusion = lambda embeddings: (
        seen.append([e.detach().clone() for e in embeddings]),
        original(embeddings),
    )[1]
    dropout_module.objectives["balance"].loss(dropout_module, batch, net.embed(batch))
    video_zero = (seen[0][0] == 0).all(dim=1)
    audio_zero = (seen[0][1] == 0).all(dim=1)
    assert torch.equal(video_zero ^ audio_zero, torch.ones(len(video_zero), dtype=torch.bool))


@pytest.mark.slow
def test_every_method_trains_end_to_end_and_evaluates_without_its_heads(synthetic_root, tmp_path):
    """One multirun over the methods on the tiny audio-visual model (mmpareto also in bf16 mixed precision): each run
    writes the diagnostics (metrics.json, history.csv), and evaluate.py rebuilds a run with unimodal heads from its
    checkpoint (the heads left out) to the same test numbers and the same masked-modality accuracies."""
    sweep = tmp_path / "sweep"
    run_cli(
        "train.py",
        "-m",
        *on_synthetic(synthetic_root, tmp_path),
        *TINY,
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=3",
        "logger=none",
        "balance=aux_heads,ogm_ge,mmpareto,modality_dropout,pmr",
        f"hydra.sweep.dir={sweep}",
    )
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 5
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        balance = metrics["modality_balance"]
        assert 0 <= balance["acc_only_audio"] <= 1 and 0 <= balance["acc_only_video"] <= 1
        assert balance["imbalance_audio_video"] > 0
        history = pd.read_csv(run / "history.csv")
        assert (
            history[["val/acc_only_audio", "val/acc_only_video", "val/imbalance_audio_video"]]
            .notna()
            .all()
            .all()
        )
    pareto = next(r for r in runs if "mmpareto" in (r / ".hydra" / "overrides.yaml").read_text())
    metrics = json.loads((pareto / "metrics.json").read_text())
    checkpoint = load_checkpoint(metrics["checkpoint"])
    assert any(
        k.startswith("objectives.balance.heads.") for k in checkpoint["state_dict"]
    )  # trained with the network
    evaluated = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={evaluated}")
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    for key in ("acc_only_audio", "acc_only_video", "imbalance_audio_video"):
        assert again["modality_balance"][key] == pytest.approx(metrics["modality_balance"][key], abs=1e-5)
    mixed = tmp_path / "bf16"
    run_cli(
        "train.py",
        *on_synthetic(synthetic_root, tmp_path),
        *TINY,
        "trainer.max_epochs=1",
        "logger=none",
        "++trainer.limit_train_batches=3",
        "balance=mmpareto",
        "trainer.precision=bf16-mixed",
        f"hydra.run.dir={mixed}",
    )
    assert json.loads((mixed / "metrics.json").read_text())["modality_balance"]["acc_only_audio"] >= 0


def test_a_reloaded_checkpoint_keeps_the_training_means(tiny_checkpoint):
    """The probe's training means travel in the checkpoint (plain lists), so evaluate.py masks with the same means."""
    checkpoint = load_checkpoint(tiny_checkpoint)
    means = checkpoint["cremad_lit"]["modality_means"]["means"]
    module, _ = model_from_checkpoint(checkpoint)
    assert module.probe is not None and len(module.probe.means) == len(means) == 2
    assert all(torch.allclose(a, torch.tensor(b)) for a, b in zip(module.probe.means, means, strict=True))


def test_the_probe_on_a_trained_run_whose_head_ignores_the_face(trained_run, tiny_checkpoint):
    """On the suite's trained tiny model, its fusion head's face weights zeroed: tested by Lightning, the fused accuracy
    equals the accuracy with the voice alone, and the face alone gives one class for every clip (its share)."""
    checkpoint = load_checkpoint(tiny_checkpoint)
    module, cfg = model_from_checkpoint(checkpoint)
    net = module.net
    video_size = net.embedding_sizes[0]
    with torch.no_grad():
        net.fusion.classifier.weight[:, :video_size] = 0
    datamodule = build_datamodule(cfg.data, model_inputs(net, cfg.model))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    balance = module.test_results["modality_balance"]
    assert balance["acc_only_audio"] == pytest.approx(module.test_results["accuracy"], abs=1e-6)
    # the face alone: the head sees the voice's training mean and a face it ignores, so one class for every clip
    means = [m[None].float() for m in module.probe.means]
    constant = int(net.fusion(means).argmax())
    labels = pd.Series([p["label"] for p in module.test_predictions])
    assert balance["acc_only_video"] == pytest.approx((labels == constant).mean(), abs=1e-6)
