"""Synthetic CREMA-D: a small dataset in the real format, with emotion cues in both modalities.

    python -m cremad_lit.data.synthetic --out data/synthetic-cremad            # official layout (flv + wav)
    python -m cremad_lit.data.synthetic --out DIR --layout kaggle --actors 24  # Kaggle mp4 copy

Official layout: `VideoFlash/*.flv` (FLV1 video 480x360 at 29.97 fps, MP3 audio at 44.1 kHz, 2-3 s),
`AudioWAV/*.wav` (16 kHz mono PCM), `VideoDemographics.csv`. Kaggle layout: flat `*.mp4` (h264/aac) whose names end in
the gender code (`_01` male, `_02` female) and nothing else. Deterministic for a given seed.

Design (why a fused model must win): each emotion is a pair (face code, voice code).

    emotion   face (video)                                         voice (audio)
    ANG       a: brows down, narrow eyes, leans in, flushes        p: high, rising, loud, fast
    DIS       a: brows down, narrow eyes, leans in, flushes        q: mid, flat, medium
    FEA       b: brows raised, wide eyes, head lowered, pales      r: high, vibrato, medium
    SAD       b: brows raised, wide eyes, head lowered, pales      s: low, falling, quiet, slow
    HAP       c: smile, nodding, brighter face                     p: high, rising, loud, fast
    NEU       d: neutral, still                                    q: mid, flat, medium

The face alone cannot tell ANG from DIS nor FEA from SAD; the voice alone cannot tell ANG from HAP nor DIS from NEU.
So either modality caps out near 4/6 of the clips, and only the fusion can reach all six. Each actor has their own face
size, place, skin and background colour and voice pitch (male lower than female), every clip jitters its cue strengths,
and pixel and audio noise are added, so held-out actors are a real test. Intensity (LO/MD/HI for the IEO statement, as in
CREMA-D) scales the strength of the expression.

Modality imbalance (`face_strength`, `data=synthetic_imbalanced`): below 1 every facial cue (expression, head movement,
skin tone) is that much weaker while the voice stays as it is, so the voice is the easier, faster modality (as on
CREMA-D) while the fused task still needs both: the phenomenon balance.py measures and the balance= methods address.
The generation settings are recorded in `synthetic.json`; a folder made with other settings is never added to.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
import wave
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from cremad_lit.data.adapters.cremad import STATEMENTS
from cremad_lit.data.isolation import worker_context
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.io import write_atomic, write_text

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 480, 360
FPS = Fraction(30000, 1001)
VIDEO_AUDIO_RATE = 44100
WAV_RATE = 16000

FACE_CODES = {"ANG": "a", "DIS": "a", "FEA": "b", "SAD": "b", "HAP": "c", "NEU": "d"}
VOICE_CODES = {"ANG": "p", "HAP": "p", "DIS": "q", "NEU": "q", "FEA": "r", "SAD": "s"}
# brow inner-end lift (fraction of face radius), eye openness, mouth curvature, and head movement: scale change
# (leaning in or back), vertical shift (lowering the head), nodding amplitude. Head movement is the coarse cue a small
# network picks up first; the facial features are the fine one.
FACES = {
    "a": (-0.22, 0.4, -0.3, 0.18, 0.0, 0.0),
    "b": (0.22, 1.6, -0.5, -0.1, 0.3, 0.0),
    "c": (0.0, 0.8, 1.0, 0.0, 0.0, 0.15),
    "d": (0.0, 1.0, 0.0, 0.0, 0.0, 0.0),
}
# pitch multiplier, pitch glide over the clip, loudness, syllables per second, vibrato depth
VOICES = {
    "p": (1.45, 0.25, 0.9, 6.0, 0.0),
    "q": (1.0, 0.0, 0.45, 4.0, 0.0),
    "r": (1.4, 0.0, 0.5, 5.0, 0.07),
    "s": (0.75, -0.25, 0.2, 2.5, 0.0),
}
# Skin tone change (RGB) at full expression: flushing in anger/disgust, pallor in fear/sadness, a brighter face when
# happy. Relative to each actor's own skin, so it is read by comparing frames over time.
SKIN_SHIFT = {"a": (45, -20, -20), "b": (-25, -10, 30), "c": (20, 20, 10), "d": (0, 0, 0)}
INTENSITY_STRENGTH = {"LO": 0.55, "MD": 0.8, "HI": 1.0, "XX": 0.9}


@dataclass(frozen=True)
class Actor:
    actor_id: int
    sex: str
    age: int
    face_radius: float
    face_center: tuple[float, float]
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    pitch_hz: float


@dataclass(frozen=True)
class Clip:
    actor: Actor
    statement: str
    emotion: str
    intensity: str
    seed: int
    face_strength: float = 1.0

    @property
    def stem(self) -> str:
        return f"{self.actor.actor_id}_{self.statement}_{self.emotion}_{self.intensity}"


def make_actors(count: int, rng: np.random.Generator) -> list[Actor]:
    actors = []
    for index in range(count):
        sex = "Male" if index % 2 == 0 else "Female"
        actors.append(
            Actor(
                actor_id=1001 + index,
                sex=sex,
                age=int(rng.integers(20, 75)),
                face_radius=float(rng.uniform(68, 92)),
                face_center=(float(rng.uniform(0.42, 0.58) * WIDTH), float(rng.uniform(0.42, 0.55) * HEIGHT)),
                skin=tuple(int(v) for v in rng.integers(90, 235, size=3)),
                background=tuple(int(v) for v in rng.integers(0, 120, size=3)),
                pitch_hz=float(rng.uniform(100, 140) if sex == "Male" else rng.uniform(180, 240)),
            )
        )
    return actors


def make_clips(actors: list[Actor], sentences: int, seed: int, face_strength: float = 1.0) -> list[Clip]:
    """CREMA-D's design: IEO at LO/MD/HI (NEU only at XX), every other statement at XX."""
    statements = list(STATEMENTS)[:sentences]
    clips = []
    for actor in actors:
        for statement in statements:
            for emotion in EMOTIONS:
                intensities = ["LO", "MD", "HI"] if statement == "IEO" and emotion != "NEU" else ["XX"]
                for intensity in intensities:
                    clips.append(
                        Clip(
                            actor,
                            statement,
                            emotion,
                            intensity,
                            seed=zlib.crc32(
                                f"{seed}_{actor.actor_id}_{statement}_{emotion}_{intensity}".encode()
                            ),
                            face_strength=face_strength,
                        )
                    )
    return clips


def _expression_ramp(t: np.ndarray, duration: float) -> np.ndarray:
    """Expressions build up over the first third of the clip, so which frames are sampled matters."""
    return np.clip(t / (0.35 * duration), 0.0, 1.0)


def render_frames(clip: Clip, duration: float, rng: np.random.Generator) -> np.ndarray:
    actor = clip.actor
    count = int(round(duration * float(FPS)))
    t = np.arange(count) / float(FPS)
    strength = INTENSITY_STRENGTH[clip.intensity] * rng.uniform(0.75, 1.2) * clip.face_strength
    brow, eye, curve, lean, drop, nod = FACES[FACE_CODES[clip.emotion]]
    shift = SKIN_SHIFT[FACE_CODES[clip.emotion]]
    ramp = _expression_ramp(t, duration) * strength
    talk_rate = rng.uniform(3.0, 5.0)
    bob = rng.uniform(0, 2 * np.pi)
    frames = np.empty((count, HEIGHT, WIDTH, 3), dtype=np.uint8)
    background = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    background[:] = actor.background
    for i, s in enumerate(ramp):
        frame = frames[i]
        frame[:] = background
        r = actor.face_radius * (1 + lean * s)
        cx = actor.face_center[0] + 4 * np.sin(2 * np.pi * 0.7 * t[i] + bob)
        cy = actor.face_center[1] + 3 * np.cos(2 * np.pi * 0.5 * t[i] + bob)
        cy += actor.face_radius * (drop * s + nod * s * np.sin(2 * np.pi * 2.0 * t[i]))
        skin = tuple(int(np.clip(c + d * s, 0, 255)) for c, d in zip(actor.skin, shift, strict=True))
        cv2.ellipse(frame, (int(cx), int(cy)), (int(r), int(1.3 * r)), 0, 0, 360, skin, -1, cv2.LINE_AA)
        dark = (30, 30, 30)
        openness = 1.0 + (eye - 1.0) * s
        for side in (-1, 1):
            ex, ey = cx + side * 0.38 * r, cy - 0.25 * r
            cv2.ellipse(
                frame,
                (int(ex), int(ey)),
                (int(0.2 * r), max(1, int(0.13 * r * openness))),
                0,
                0,
                360,
                (245, 245, 245),
                -1,
                cv2.LINE_AA,
            )
            cv2.circle(
                frame, (int(ex), int(ey)), max(1, int(0.06 * r * min(openness, 1.2))), dark, -1, cv2.LINE_AA
            )
            inner = (ex - side * 0.18 * r, ey - (0.28 + brow * s) * r)
            outer = (ex + side * 0.22 * r, ey - 0.3 * r)
            cv2.line(
                frame,
                (int(inner[0]), int(inner[1])),
                (int(outer[0]), int(outer[1])),
                dark,
                max(3, int(0.1 * r)),
                cv2.LINE_AA,
            )
        # The mouth moves with speech at an emotion-independent rate, its shape carries the emotion.
        mouth_open = 0.04 + 0.12 * max(0.0, np.sin(2 * np.pi * talk_rate * t[i]))
        mx, my, half = cx, cy + 0.6 * r, 0.38 * r
        xs = np.linspace(-1, 1, 21)
        lip = my + curve * s * 0.22 * r * (1 - xs**2) - curve * s * 0.05 * r
        upper = np.stack([mx + xs * half, lip - mouth_open * r * (1 - xs**2)], axis=1)
        lower = np.stack([mx + xs * half, lip + mouth_open * r * (1 - xs**2)], axis=1)[::-1]
        cv2.fillPoly(frame, [np.concatenate([upper, lower]).astype(np.int32)], (60, 20, 40), cv2.LINE_AA)
    # Sensor-like noise in 4x4 blocks, drawn for the whole clip at once (the same numbers as frame by frame).
    noise = rng.normal(0, 6, size=(count, HEIGHT // 4, WIDTH // 4, 3)).astype(np.int16)
    for frame, frame_noise in zip(frames, noise, strict=True):
        upsampled = cv2.resize(frame_noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
        cv2.add(frame, upsampled, dst=frame, dtype=cv2.CV_8U)  # saturates at 0 and 255
    return frames


def synthesize_voice(clip: Clip, duration: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic voice whose pitch, contour, loudness and tempo follow the emotion's voice code."""
    multiplier, glide, loudness, syllables, vibrato = VOICES[VOICE_CODES[clip.emotion]]
    strength = INTENSITY_STRENGTH[clip.intensity]
    jitter = rng.uniform(0.93, 1.07, size=3)
    t = np.arange(int(duration * rate)) / rate
    progress = t / duration
    f0 = clip.actor.pitch_hz * (1 + (multiplier - 1) * strength) * jitter[0]
    f0 = f0 * (1 + glide * strength * (progress - 0.5)) * (1 + vibrato * np.sin(2 * np.pi * 7.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 9) if k * f0.max() < rate / 2)
    syllable = (0.5 + 0.5 * np.sin(2 * np.pi * syllables * jitter[1] * t)) ** 2
    speaking = np.clip(np.minimum(t - 0.15, duration - 0.15 - t) / 0.05, 0, 1)
    voice = 0.25 * loudness * jitter[2] * harmonics * syllable * speaking
    return (voice + rng.normal(0, 0.004, size=t.shape)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")

    def write(buffer) -> None:
        with wave.open(buffer, "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(rate)
            handle.writeframes(pcm.tobytes())

    write_atomic(path, write)


def encode_video(path: Path, frames: np.ndarray, audio: np.ndarray | None, container_format: str) -> None:
    """Encode frames (T,H,W,3 RGB uint8) and optional mono audio at 44.1 kHz; atomic (io.write_atomic)."""
    write_atomic(path, lambda buffer: _encode(buffer, frames, audio, container_format))


def _encode(buffer, frames: np.ndarray, audio: np.ndarray | None, container_format: str) -> None:
    video_codec, audio_codec = ("flv", "libmp3lame") if container_format == "flv" else ("libx264", "aac")
    with av.open(buffer, "w", format=container_format) as container:
        video = container.add_stream(video_codec, rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = 600_000
        sound = None
        if audio is not None:
            sound = container.add_stream(audio_codec, rate=VIDEO_AUDIO_RATE, layout="mono")
        samples = np.clip(audio, -1, 1).astype(np.float32) if audio is not None else None
        chunk = (sound.codec_context.frame_size or 1152) if sound is not None else 0
        written = (
            0  # audio samples muxed so far: keep audio and video interleaved in time, as the FLV muxer needs
        )

        def mux_audio_until(end: int) -> None:
            nonlocal written
            while sound is not None and written < min(end, len(samples)):
                piece = samples[written : written + chunk]
                frame = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = VIDEO_AUDIO_RATE, written
                container.mux(sound.encode(frame))
                written += len(piece)

        for index, array in enumerate(frames):
            container.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            mux_audio_until(int((index + 1) / float(FPS) * VIDEO_AUDIO_RATE))
        container.mux(video.encode())
        if sound is not None:
            mux_audio_until(len(samples))
            container.mux(sound.encode())


def write_clip(clip: Clip, out: Path, layout: str) -> str:
    rng = np.random.default_rng(clip.seed)
    duration = float(rng.uniform(2.0, 3.0))
    frames = render_frames(clip, duration, rng)
    video_audio = synthesize_voice(clip, duration, VIDEO_AUDIO_RATE, np.random.default_rng(clip.seed + 1))
    if layout == "official":
        encode_video(out / "VideoFlash" / f"{clip.stem}.flv", frames, video_audio, "flv")
        wav = synthesize_voice(clip, duration, WAV_RATE, np.random.default_rng(clip.seed + 1))
        write_wav(out / "AudioWAV" / f"{clip.stem}.wav", wav, WAV_RATE)
    else:
        gender = "01" if clip.actor.sex == "Male" else "02"
        encode_video(out / f"{clip.stem}_{gender}.mp4", frames, video_audio, "mp4")
    return clip.stem


def generate(
    out: str | os.PathLike,
    actors: int = 12,
    sentences: int = 2,
    seed: int = 0,
    layout: str = "official",
    workers: int | None = None,
    face_strength: float = 1.0,
) -> Path:
    """Write the dataset into `out` (skipping clips already there) and return its path."""
    if layout not in ("official", "kaggle"):
        raise ValueError(f"layout must be 'official' or 'kaggle', not {layout!r}")
    if not 1 <= sentences <= len(STATEMENTS):
        raise ValueError(f"sentences must be between 1 and {len(STATEMENTS)}")
    out = Path(out)
    settings = {"actors": actors, "sentences": sentences, "seed": seed, "face_strength": float(face_strength)}
    recorded = out / "synthetic.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != settings:
        raise ValueError(
            f"{out} holds a synthetic set made with {json.loads(recorded.read_text())}, not {settings}: give another "
            "folder (data=synthetic names it after its settings) or delete this one"
        )
    rng = np.random.default_rng(seed)
    cast = make_actors(actors, rng)
    clips = make_clips(cast, sentences, seed, face_strength)
    if layout == "official":
        (out / "VideoFlash").mkdir(parents=True, exist_ok=True)
        (out / "AudioWAV").mkdir(parents=True, exist_ok=True)
        demographics = pd.DataFrame(
            {
                "ActorID": [a.actor_id for a in cast],
                "Age": [a.age for a in cast],
                "Sex": [a.sex for a in cast],
                "Race": "Synthetic",
                "Ethnicity": "Synthetic",
            }
        )
        write_text(out / "VideoDemographics.csv", demographics.to_csv(index=False))
        done = {p.stem for p in (out / "VideoFlash").glob("*.flv")} & {
            p.stem for p in (out / "AudioWAV").glob("*.wav")
        }
    else:
        out.mkdir(parents=True, exist_ok=True)
        done = {p.stem.rsplit("_", 1)[0] for p in out.glob("*.mp4")}
    if done and not recorded.is_file() and face_strength != 1.0:
        raise ValueError(f"{out} holds clips made before face_strength existed (1.0): give another folder")
    out.mkdir(parents=True, exist_ok=True)
    write_text(recorded, json.dumps(settings, indent=2))
    todo = [c for c in clips if c.stem not in done]
    workers = workers or min(len(todo), os.cpu_count() or 1) or 1
    started = time.perf_counter()
    # Not forked from this process: a fork of a process whose decoders or torch already run threads can deadlock in
    # the encoder (seen: the suite's workers hung in PyAV's encode after decoding video in-process). The isolation
    # workers' fork server instead (single-threaded, torch imported once, the command's main module not imported: a
    # spawned worker of `train.py experiment=demo` imported Lightning first). Inside a joblib (loky) worker of a
    # parallel sweep no such child can start (it asks for loky's start method): forked there, first thing in a fresh
    # worker.
    inside_loky = multiprocessing.get_start_method(allow_none=True) == "loky"
    context = multiprocessing.get_context("fork") if inside_loky else worker_context()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        jobs = pool.map(write_clip, todo, [out] * len(todo), [layout] * len(todo), chunksize=4)
        for _ in tqdm(
            jobs, total=len(todo), desc=f"synthetic CREMA-D -> {out}", unit="clip", disable=not todo
        ):
            pass
    log.info(
        "%d clips ready in %s (%d written in %.1f s)",
        len(clips),
        out,
        len(todo),
        time.perf_counter() - started,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder to write the dataset into")
    parser.add_argument("--actors", type=int, default=12, help="number of actors (alternating male, female)")
    parser.add_argument(
        "--sentences", type=int, default=2, help=f"number of statements, 1-{len(STATEMENTS)} (IEO first)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=["official", "kaggle"], default="official")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument(
        "--face-strength",
        type=float,
        default=1.0,
        help="facial cues' strength (below 1: the voice dominates)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    path = generate(
        args.out, args.actors, args.sentences, args.seed, args.layout, args.workers, args.face_strength
    )
    print(f"synthetic CREMA-D written to {path}")


if __name__ == "__main__":
    # The package's copy of this module, so that its workers find write_clip by name (they import no __main__).
    from cremad_lit.data.synthetic import main as package_main

    package_main()
