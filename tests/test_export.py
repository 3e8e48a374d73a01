"""ONNX export: the exported graph run by onnxruntime gives torch's probabilities on real clips, at any batch size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cremad_lit.export import example_batch, export_onnx, load_exported
from cremad_lit.predictors import load_checkpoint, model_from_checkpoint
from cremad_lit.predictors.files import predict_files
from tests.conftest import SAMPLE_FLVS, TINY, run_cli, tiny_module

NETS = {
    "audio-visual": TINY,
    # experiment=speech's network shape: the Mel CNN beside the eGeMAPS functionals branch, audio only
    "audio+functionals": [
        *TINY,
        "data.modalities=[audio]",
        "+model/functionals@model.functionals=egemaps_mlp",
        "data.functionals=egemaps",
    ],
}


@pytest.mark.parametrize("name", NETS)
def test_onnx_probabilities_equal_torch_on_real_clips(name, tmp_path, samples_dir):
    module, cfg = tiny_module(NETS[name])
    settings = export_onnx(module, cfg, tmp_path)
    assert settings["max_abs_difference_from_torch"] < 1e-4
    assert json.loads((tmp_path / "model.json").read_text())["classes"] == list(module.classes)
    exported, stored_cfg = load_exported(tmp_path / "model.onnx")
    assert exported.net.modalities == module.net.modalities
    files = [*SAMPLE_FLVS[:3], *sorted((samples_dir / "AudioWAV").glob("*.wav"))[:2]]
    if "video" in module.net.modalities:
        files = files[:3]
    by_torch = predict_files(module, cfg, files)
    by_onnx = predict_files(exported, stored_cfg, files)
    assert len(by_onnx) == len(files) and all("probabilities" in r for r in by_onnx)
    for ours, theirs in zip(by_torch, by_onnx, strict=True):
        assert ours["prediction"] == theirs["prediction"]
        np.testing.assert_allclose(
            list(theirs["probabilities"].values()), list(ours["probabilities"].values()), atol=1e-4
        )
    for batch in (1, 5):  # the batch axis is dynamic, the recurrent state included
        example = example_batch(module.net, cfg, batch=batch)
        with torch.no_grad():
            expected = module.net(example).softmax(dim=1).numpy()
        np.testing.assert_allclose(exported.run(example)[1], expected, atol=1e-4)


def test_a_missing_settings_file_is_named(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_exported(tmp_path / "model.onnx")


@pytest.mark.slow
def test_export_then_predict_through_the_commands(tiny_checkpoint, tmp_path):
    run_cli(
        "-m", "cremad_lit", "export", f"ckpt_path={tiny_checkpoint}", f"hydra.run.dir={tmp_path / 'export'}"
    )
    inputs = ",".join(f"'{p}'" for p in SAMPLE_FLVS)
    model = tmp_path / "export" / "model.onnx"
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={model}",
        f"inputs=[{inputs}]",
        f"hydra.run.dir={tmp_path}/p",
    )
    by_onnx = json.loads((tmp_path / "p" / "predictions.json").read_text())
    by_torch = predict_files(*model_from_checkpoint(load_checkpoint(tiny_checkpoint)), SAMPLE_FLVS)
    assert len(by_onnx) == len(SAMPLE_FLVS)
    for ours, theirs in zip(by_torch, by_onnx, strict=True):
        assert ours["prediction"] == theirs["prediction"]
        for emotion, p in ours["probabilities"].items():
            assert theirs["probabilities"][emotion] == pytest.approx(p, abs=1e-4)


@pytest.mark.slow  # builds and traces a transformer: ~15 s
def test_a_speech_encoder_exports_with_dynamic_length_and_padding(tmp_path):
    from cremad_lit.models.speech_encoders import tiny_encoder_folder

    folder = tiny_encoder_folder(tmp_path / "wavlm", "wavlm")
    module, cfg = tiny_module(
        [
            *TINY,
            "data.modalities=[audio]",
            "model/backbone@model.audio_backbone=wavlm_base_plus",
            f"model.audio_backbone.pretrained_dir={folder}",
        ]
    )
    settings = export_onnx(module, cfg, tmp_path / "export")
    assert settings["inputs"] == ["waveform", "waveform_lengths"]
    exported, _ = load_exported(tmp_path / "export" / "model.onnx")
    example = example_batch(
        module.net, cfg, batch=3
    )  # exported at 1 s; run at 0.56 s, each clip padded differently
    example["waveform"] = example["waveform"][:, :9000]
    example["waveform_lengths"] = torch.tensor([9000, 6000, 4000])
    with torch.no_grad():
        expected = module.net(example).softmax(dim=1).numpy()
    np.testing.assert_allclose(exported.run(example)[1], expected, atol=1e-4)


def test_a_ge2e_branch_exports_and_reads_real_clips_of_any_length(tmp_path, ravdess_dir):
    """The GE2E port's partial windows are tensor arithmetic, so a graph traced on 1 s clips reads a padded batch of
    real takes of 1.2 to 4.4 s (one to four partials each) as the checkpoint does."""
    from cremad_lit.data.media import read_wav

    module, cfg = tiny_module([*TINY, "data.modalities=[audio]", "model/backbone@model.audio_backbone=ge2e"])
    settings = export_onnx(module, cfg, tmp_path)
    assert settings["inputs"] == ["waveform", "waveform_lengths"]
    exported, _ = load_exported(tmp_path / "model.onnx")
    clips = [read_wav(str(p)) for p in sorted((ravdess_dir / "Actor_07").glob("*.wav"))[:3]]
    clips[1] = clips[1][:19200]
    example = {
        "waveform": torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c) for c in clips], batch_first=True),
        "waveform_lengths": torch.tensor([len(c) for c in clips]),
    }
    with torch.no_grad():
        expected = module.net(example).softmax(dim=1).numpy()
    np.testing.assert_allclose(exported.run(example)[1], expected, atol=1e-4)
