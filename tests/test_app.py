"""The demo page: its Python API on real clips (fast), and the served page driven by a real headless Chromium (slow)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time

import numpy as np
import pytest

from cremad_lit.app import Judge, build_page, examples_in, page_outputs
from cremad_lit.predictors import Ensemble, Network, load_predictor
from tests.conftest import REPO, SAMPLE_FLVS, SAMPLES, inject_faults, tiny_module
from tests.preloaded import start_forked

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags a sandboxed, offline machine needs (no background connections to Google's services).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def two_networks() -> Ensemble:
    return Ensemble([Network(f"net{seed}.ckpt", *tiny_module(seed=seed)) for seed in (0, 1)], [0.25, 0.75])


def test_judge_shows_probabilities_members_frames_and_mel_of_a_real_clip():
    ensemble = two_networks()
    judge = Judge(ensemble)
    verdict = judge(SAMPLE_FLVS[0])
    assert not verdict.error and sum(verdict.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert verdict.prediction == max(verdict.probabilities, key=verdict.probabilities.get)
    # The page's numbers are predict's numbers, and the fused ones the weighted mean of the members'.
    fused = ensemble.predict([SAMPLE_FLVS[0]], speaker="file")
    assert verdict.probabilities == pytest.approx(fused[0]["probabilities"])
    mixed = {
        c: 0.25 * verdict.members[0]["probabilities"][c] + 0.75 * verdict.members[1]["probabilities"][c]
        for c in judge.classes
    }
    assert verdict.probabilities == pytest.approx(mixed)
    assert verdict.members[0]["probabilities"] != verdict.members[1]["probabilities"]
    prep = ensemble.models[0].train_cfg.data.preprocessing
    assert len(verdict.faces) == prep.frames and verdict.faces[0].shape == (32, 32, 3)
    assert verdict.faces[0].dtype == np.uint8 and verdict.faces[0].std() > 0
    assert verdict.mel.shape[-2:] == (prep.n_mels, prep.mel_width)

    label, status, faces, figure, rows = page_outputs(judge, str(SAMPLE_FLVS[0]))
    assert label == verdict.probabilities and verdict.prediction in status and len(faces) == prep.frames
    assert figure.axes[0].get_title() == "What the audio branch read"
    assert [r[0] for r in rows] == ["net0.ckpt", "net1.ckpt"] and rows[1][1] == 0.75


def test_the_page_says_why_a_clip_cannot_be_read(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    judge = Judge(Network("net.ckpt", *tiny_module()))
    label, status, faces, figure, rows = page_outputs(judge, str(broken))
    assert label is None and "broken.mp4" in status and len(status) > len("**broken.mp4**: ")
    assert page_outputs(judge, None)[1] == "Drop a clip or record one first."
    # a real WAV and a text file named .wav, dropped on an audio-visual model: the user's input, said on the page
    for sound in (next((SAMPLES / "AudioWAV").glob("*.wav")), tmp_path / "notes.wav"):
        if not sound.exists():
            sound.write_text("not a recording")
        label, status, *_ = page_outputs(judge, str(sound))
        assert label is None and f"**{sound.name}**" in status and "has no faces" in status


def test_the_page_is_built_with_examples():
    examples = examples_in(SAMPLES / "VideoFlash", limit=4)
    assert len(examples) == 4 and all(p.suffix == ".flv" for p in examples)
    page = build_page(Judge(Network("net.ckpt", *tiny_module())), examples, "tiny")
    ids = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"clip", "recording", "judge", "emotion", "faces", "mel", "members", "status"} <= ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian's chromium package; .ci/run installs it)")
def test_the_page_in_a_real_browser(tiny_checkpoint, tmp_path):
    """Serve the page, open it in headless Chromium, upload a shared real clip, read the label the page shows."""
    from playwright.sync_api import sync_playwright

    port, clip = free_port(), SAMPLE_FLVS[3]
    log = tmp_path / "server.log"
    server = start_forked(  # forked from the suite's preloader, as the suite's other commands
        [
            "-m",
            "cremad_lit",
            "app",
            f"ckpt_path={tiny_checkpoint}",
            f"examples={SAMPLES / 'VideoFlash'}",
            f"port={port}",
            f"hydra.run.dir={tmp_path / 'app'}",
        ],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        REPO,
        log,
    )

    def said() -> str:
        return log.read_text(errors="replace") if log.exists() else ""

    try:
        deadline = time.time() + 180
        while "Running on local URL" not in said():
            assert server.is_alive() and time.time() < deadline, said()
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}")
            page.locator("#judge").wait_for(timeout=120_000)  # the page's scripts have built it

            def uploaded(response) -> bool:  # the upload's own request (not its progress stream)
                return response.request.method == "POST" and response.url.split("?")[0].endswith("/upload")

            try:  # the upload finished (the server answered it), then the verdict is shown
                with page.expect_response(uploaded, timeout=120_000) as upload:
                    page.set_input_files("#clip input[type=file]", str(clip))
                assert upload.value.ok, upload.value.status
                # The page sets the clip's value once the upload's answer is in: a judgement asked before that
                # judges no clip ("Drop a clip ..."), so it is asked again (the page on a busy machine).
                status = page.locator("#status")
                verdict, empty = status.get_by_text(clip.name), status.get_by_text("Drop a clip")
                page.click("#judge")
                verdict.or_(empty).wait_for(timeout=120_000)
                if not verdict.count():
                    page.wait_for_timeout(3_000)
                    page.click("#judge")
                    verdict.wait_for(timeout=120_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "stuck.png"), full_page=True)
                print(f"the server said:\n{said()[-6000:]}\nscreenshot: {tmp_path / 'stuck.png'}")
                raise
            shown = re.search(rf"{re.escape(clip.name)}: (\w+)", page.inner_text("#status")).group(1)
            emotion_box = page.inner_text("#emotion")
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            browser.close()
        print(f"screenshot: {tmp_path / 'app.png'}")
        fused = load_predictor(str(tiny_checkpoint)).predict([clip], speaker="file")
        assert shown == fused[0]["prediction"] and shown in emotion_box
        assert (tmp_path / "app.png").stat().st_size > 10_000
    finally:
        server.terminate()
        server.join(30)


def test_the_page_runs_an_exported_model_as_it_runs_the_checkpoint(tmp_path):
    from cremad_lit.export import export_onnx

    module, cfg = tiny_module()
    export_onnx(module, cfg, tmp_path)
    by_onnx = Judge(load_predictor(str(tmp_path / "model.onnx")))(SAMPLE_FLVS[1])
    by_torch = Judge(Network("net.ckpt", module, cfg))(SAMPLE_FLVS[1])
    assert by_onnx.prediction == by_torch.prediction
    assert by_onnx.probabilities == pytest.approx(by_torch.probabilities, abs=1e-4)
    assert len(by_onnx.faces) == len(by_torch.faces) and by_onnx.mel.shape == by_torch.mel.shape


@pytest.mark.slow
def test_the_served_page_holds_under_concurrent_clients_and_bad_uploads(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """The page as served (IsolatedJudge in worker processes, Gradio's queue and upload limit), driven by 4 concurrent
    gradio_client clients: real clips get predict's verdict, a damaged file and a text file named .flv their reasons,
    an oversized upload is refused, and a file that crashes the decoder (the test fault hook) is that upload's error,
    while the server answers every request and the next judgement still works."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    from cremad_lit.app import IsolatedJudge, serve

    crash = tmp_path / "crash.flv"
    crash.write_bytes(SAMPLE_FLVS[2].read_bytes())
    damaged, text, big = tmp_path / "damaged.flv", tmp_path / "notes.flv", tmp_path / "big.flv"
    damaged.write_bytes(SAMPLE_FLVS[0].read_bytes()[:3000] + bytes(5000))
    text.write_text("not a video")
    big.write_bytes(SAMPLE_FLVS[0].read_bytes() * 40)  # ~6 MB, over the 2 MB limit set below
    inject_faults(monkeypatch, f"crash:{crash.stem}")  # the workers start with it
    judge = IsolatedJudge(
        str(tiny_checkpoint), workers=1, timeout_s=60
    )  # one worker: a crash must be replaced
    port = free_port()
    page = build_page(judge, [], "load test")
    try:
        url = serve(page, "127.0.0.1", port, [], block=False, concurrency=2, queue_size=32, max_upload="2mb")
        expected = {
            str(c): r["prediction"]
            for c, r in zip(
                SAMPLE_FLVS[:4],
                load_predictor(str(tiny_checkpoint)).predict(SAMPLE_FLVS[:4], speaker="file"),
                strict=True,
            )
        }
        uploads = [*SAMPLE_FLVS[:2], damaged, text, crash, *SAMPLE_FLVS[2:4]]

        def client_run(i: int) -> list[tuple[str, str]]:
            client = Client(url, verbose=False)
            answers = []
            for upload in uploads[i::4]:
                status = client.predict(handle_file(str(upload)), None, api_name="/judge")[1]
                answers.append((str(upload), status))
            try:
                client.predict(handle_file(str(big)), None, api_name="/judge")
                answers.append((str(big), "accepted"))
            except Exception as error:  # refused by the server before it was stored
                answers.append((str(big), f"refused: {error}"))
            return answers

        with ThreadPoolExecutor(4) as pool:
            answers = [a for run in pool.map(client_run, range(4)) for a in run]
        assert len(answers) == 7 + 4  # 7 uploads spread over 4 concurrent clients, and one big upload each
        for upload, status in answers:
            name = upload.rsplit("/", 1)[-1]
            if upload in expected:
                assert status == f"**{name}**: {expected[upload]}", status
            elif upload == str(big):
                assert status.startswith("refused") and "size" in status.lower(), status
            elif upload == str(crash):
                assert "crashed" in status and "SIGSEGV" in status, status
            else:
                assert status.startswith(f"**{name}**: ") and len(status) > len(name) + 8, status
        last = Client(url, verbose=False).predict(handle_file(str(SAMPLE_FLVS[0])), None, api_name="/judge")[
            1
        ]
        assert last == f"**{SAMPLE_FLVS[0].name}**: {expected[str(SAMPLE_FLVS[0])]}"
    finally:
        page.close()
        judge.close()
