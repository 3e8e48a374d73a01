"""The demo page: drop a clip (or record your voice) and see what the model heard and saw.

    python -m cremad_lit app ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    python -m cremad_lit app ckpt_path=logs/train/runs/<run> examples=../shared/cremad-samples/VideoFlash

`Judge` is the Python API (a clip in, a `Verdict` out: probabilities, each member's, the face crops and the Mel image
the model read); `IsolatedJudge` runs it in worker processes with a timeout (what the served page uses: a file that
crashes or hangs a decoder is that upload's error); `build_page` lays it out with Gradio, `serve` queues and limits it.
The page is served on this machine only, needs no account and fetches nothing (no share link, no analytics, system
fonts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cremad_lit.data.features import Preprocessing, decode_clip
from cremad_lit.data.media import MEDIA_FILES, MediaError, media_paths
from cremad_lit.pipeline import AUDIO_ONLY_SPEC
from cremad_lit.predictors import Network, Predictor

EXAMPLES_SHOWN = 8


@dataclass
class Verdict:
    file: str
    prediction: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    members: list[dict] = field(default_factory=list)  # name, weight, prediction, probabilities
    faces: list[np.ndarray] = field(default_factory=list)  # H x W x 3 uint8, as the video branch read them
    mel: np.ndarray | None = None  # n_mels x width, dB
    error: str = ""
    warning: str = ""  # predicted, with a caveat the user should see (a file that decodes only in part)


class Judge:
    """The models behind the page: `judge(path)` -> Verdict. A lone clip is its own speaker for a
    speaker-normalised model (it is normalised by itself, as predict's speaker=file)."""

    def __init__(self, predictor: Predictor, device: str = "cpu"):
        self.predictor, self.device = predictor, device
        self.members = predictor.members
        networks = [m for m, _ in self.members if isinstance(m, Network)]
        self.classes = list(predictor.classes)
        self.modalities = sorted({mod for m in networks for mod in m.model.net.modalities} or {"audio"})
        self.prep, self.decoder = self._preprocessing(networks)

    @staticmethod
    def _preprocessing(networks: list[Network]) -> tuple[Preprocessing, str]:
        if not networks:  # classical members only: show the default Mel image
            return Preprocessing(), "pyav"
        first = networks[0]
        settings = dict(first.train_cfg.data.preprocessing)
        settings["image_size"] = (first.model.net.frame_input_spec() or AUDIO_ONLY_SPEC)["image_size"]
        return Preprocessing(**settings), first.train_cfg.data.decoder

    def __call__(self, path: str | Path) -> Verdict:
        path = Path(path)
        fused, per_member = self.predictor.predict_each([path], self.device, speaker="file")
        verdict = Verdict(str(path), error=fused[0].get("error", ""), warning=fused[0].get("warning", ""))
        if verdict.error:
            return verdict
        verdict.prediction, verdict.probabilities = fused[0]["prediction"], fused[0]["probabilities"]
        verdict.members = [
            {"name": m.name, "weight": float(weight), **rows[0]}
            for (m, weight), rows in zip(self.members, per_member, strict=True)
        ]
        video, audio = media_paths(path)  # predicted, so its format is one read here
        modalities = [m for m in self.modalities if m == "audio" or video]
        try:
            sample = decode_clip(video, audio, self.prep, self.decoder, modalities)
        except MediaError as error:  # predicted, yet not drawable: say so rather than fail the page
            verdict.error = f"could not draw what the model read: {error.reason}"
            return verdict
        verdict.faces = list(sample["frames"]) if "frames" in sample else []
        verdict.mel = sample.get("mel")
        return verdict


# The page's worker processes (data/isolation.py's worker_pool, as the decoders'): each loads the models once and judges
# one upload at a time, so a file that crashes or hangs a decoder costs that upload only.
_WORKER_JUDGE: Judge | None = None


def _load_worker_judge(ckpt_path, weights, device: str) -> None:
    global _WORKER_JUDGE
    from cremad_lit.predictors import load_predictor

    _WORKER_JUDGE = Judge(load_predictor(ckpt_path, weights, device), device)


def _judge_in_worker(path: str) -> Verdict:
    return _WORKER_JUDGE(path)


def _describe_in_worker() -> dict:
    judge = _WORKER_JUDGE
    networks = [m for m, _ in judge.members if isinstance(m, Network)]
    return {
        "classes": judge.classes,
        "modalities": judge.modalities,
        "members": [(m.name, float(weight)) for m, weight in judge.members],
        "root": networks[0].train_cfg.data.get("root") if networks else None,
    }


class IsolatedJudge:
    """`Judge` with each judgement in one of `workers` processes that loaded the models once, stopped after
    `timeout_s`: a decoder crash or hang becomes that upload's error, and the server goes on answering. A crashed
    worker is replaced (it loads the models again)."""

    def __init__(
        self, ckpt_path, weights=None, device: str = "cpu", workers: int = 2, timeout_s: float = 60.0
    ):
        from cremad_lit.data.isolation import worker_pool

        self.timeout_s = timeout_s
        checkpoint = ckpt_path if isinstance(ckpt_path, str) else list(ckpt_path)
        self.pool = worker_pool(workers, _load_worker_judge, (checkpoint, weights, device), one_thread=False)
        # A model that cannot load stops here, before the page is served.
        self.description = self.pool.schedule(_describe_in_worker).result()
        self.classes, self.modalities = self.description["classes"], self.description["modalities"]

    def __call__(self, path: str | Path) -> Verdict:
        from concurrent.futures import TimeoutError as FutureTimeout

        import pebble

        from cremad_lit.data.isolation import signal_name

        future = self.pool.schedule(_judge_in_worker, args=(str(path),), timeout=self.timeout_s)
        try:
            return future.result()
        except FutureTimeout:
            reason = f"judging took longer than {self.timeout_s:g} s, so it was stopped (a file that hangs the decoder?)"
        except pebble.ProcessExpired as error:
            reason = f"the decoder crashed on this file ({signal_name(error.exitcode)}); the page goes on"
        except (
            Exception
        ) as error:  # what the worker raised (a broken environment included): this upload's answer
            reason = f"{type(error).__name__}: {error}"
        return Verdict(str(path), error=reason)

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()


def examples_in(folder: str | Path | None, limit: int = EXAMPLES_SHOWN) -> list[Path]:
    """Up to `limit` media files of a folder, spread over its sorted listing (CREMA-D's names sort by actor)."""
    if not folder or not Path(str(folder)).is_dir():
        return []
    files = sorted(p for p in Path(str(folder)).rglob("*") if p.suffix.lower() in MEDIA_FILES)
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def mel_picture(mel: np.ndarray):
    """The Mel image as a figure: frequency up, time across, in dB (no pyplot: nothing kept per request)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 2.6), dpi=100)
    axes = figure.subplots()
    shown = axes.imshow(np.asarray(mel).reshape(mel.shape[-2:]), origin="lower", aspect="auto", cmap="magma")
    axes.set(xlabel="time (Mel image columns)", ylabel="Mel band", title="What the audio branch read")
    figure.colorbar(shown, ax=axes, label="dB")
    figure.tight_layout()
    return figure


def member_rows(verdict: Verdict) -> list[list]:
    return [
        [m["name"], round(m["weight"], 3), m.get("prediction", m.get("error", "")), *_rounded(m, verdict)]
        for m in verdict.members
    ]


def _rounded(member: dict, verdict: Verdict) -> list[float]:
    return [round(member.get("probabilities", {}).get(c, float("nan")), 3) for c in verdict.probabilities]


def page_outputs(judge: Judge, clip: str | None, recording: str | None = None) -> tuple:
    """What the page shows for an uploaded clip or a recording: probabilities (for gr.Label), a status line, the
    frames, the Mel figure and one row per member."""
    source = clip or recording
    if not source:
        return None, "Drop a clip or record one first.", [], None, []
    verdict = judge(source)
    if not verdict.probabilities:
        return None, f"**{Path(source).name}**: {verdict.error}", [], None, []
    status = f"**{Path(source).name}**: {verdict.prediction}"
    if verdict.warning:
        status += f" ({verdict.warning})"
    if verdict.error:
        status += f" ({verdict.error})"
    figure = mel_picture(verdict.mel) if verdict.mel is not None else None
    return verdict.probabilities, status, verdict.faces, figure, member_rows(verdict)


def build_page(judge: Judge, examples: list[Path], description: str = ""):
    """The Gradio page around `judge`. Returns the Blocks (call `.launch()`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with gr.Blocks(title="cremad-lit: what the model heard and saw") as page:
        gr.Markdown(f"# What the model heard and saw\n{description}")
        with gr.Row():
            with gr.Column(scale=1):
                clip = gr.File(
                    label="A clip: video with a face and speech, or audio",
                    file_types=list(MEDIA_FILES),
                    type="filepath",
                    elem_id="clip",
                )
                recording = gr.Audio(
                    sources=["microphone"], type="filepath", label="or record your voice", elem_id="recording"
                )
                button = gr.Button("Judge", variant="primary", elem_id="judge")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[clip], label="Real clips to try")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                label = gr.Label(num_top_classes=len(judge.classes), label="Emotion", elem_id="emotion")
                faces = gr.Gallery(
                    label="Frames the video branch read", columns=4, height=220, elem_id="faces"
                )
                mel = gr.Plot(label="Mel image", elem_id="mel")
                members = gr.Dataframe(
                    headers=["member", "weight", "prediction", *judge.classes],
                    label="Each member's opinion (the page shows their weighted mean)",
                    elem_id="members",
                )
        button.click(
            lambda *given: page_outputs(judge, *given),
            inputs=[clip, recording],
            outputs=[label, status, faces, mel, members],
            api_name="judge",  # what a client (gradio_client, a script) calls
        )
    return page


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(
    page,
    host: str,
    port: int,
    examples: list[Path],
    block: bool = True,
    concurrency: int = 2,
    queue_size: int = 16,
    max_upload: str = "100mb",
    auth: tuple[str, str] | None = None,
):
    """Serve the page on host:port (this machine only by default); returns the local URL when not blocking. At most
    `concurrency` judgements run at once and `queue_size` wait (Gradio's queue: past it a request is refused with
    "queue is full"); uploads over `max_upload` are refused before they are stored."""
    import gradio as gr

    if host not in LOCAL_HOSTS:
        print(
            f"warning: host={host}: the page is reachable from the network"
            + (
                " with the given login (auth)"
                if auth
                else " and has no login: anyone who reaches it can use it (auth=[user,password])"
            ),
            flush=True,
        )
    page.queue(default_concurrency_limit=concurrency, max_size=queue_size)

    system_fonts = ["ui-sans-serif", "system-ui", "sans-serif"]  # the default theme fetches Google's fonts
    _, url, _ = page.launch(
        server_name=host,
        server_port=port,
        share=False,  # no public link: nothing leaves the machine
        ssr_mode=False,  # no Node server beside Python's
        theme=gr.themes.Default(font=system_fonts, font_mono=["ui-monospace", "monospace"]),
        allowed_paths=sorted({str(p.parent.resolve()) for p in examples}),  # the example clips may be served
        prevent_thread_lock=not block,
        footer_links=[],
        max_file_size=max_upload,
        auth=tuple(auth) if auth else None,
    )
    return url
