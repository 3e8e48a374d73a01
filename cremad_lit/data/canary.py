"""The canary: known-good media, decoded through the same path as a clip that failed, tells a damaged file from a
broken environment.

    from cremad_lit.data.canary import guarded
    sample = guarded(lambda v, a: extract_clip(v, a, prep, decoder), video_path, audio_path, purpose="clip 9a0d")

A decoder raises ValueError or RuntimeError for a damaged file and for a library that does not work alike, so the
exception's type cannot say which it was. The canary can. When `decode(video_path, audio_path)` fails, the same
decoding runs on canary files of the same kinds (written once per process by PyAV: FLV1/MP3 for .flv, H.264/AAC MP4
for any other video, 16-bit PCM WAV for .wav, MP3 for other audio):
- the canary decodes: the failure is the file's. A MediaError stays one; any other exception becomes a MediaError
  with the exception as its reason ("damaged: ValueError: ..."), which the caller records as a skip;
- the canary fails too: the environment is broken, BrokenEnvironment naming the library (nothing is recorded).
A good verdict is kept per process and `purpose`, so a corpus with many bad files decodes the canary once per worker.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from cremad_lit.data.media import MediaError, MissingModality
from cremad_lit.environment import REINSTALL, BrokenEnvironment, describe
from cremad_lit.errors import Stop

T = TypeVar("T")
# (purpose, canary video kind, canary audio kind) whose canary decoded in this process.
_GOOD: set[tuple[str, str, str]] = set()
_FOLDER: list[Path] = []


def forget() -> None:
    """Drop the kept verdicts (tests that break a library on purpose start from none)."""
    _GOOD.clear()


def kinds(video_path: str, audio_path: str) -> tuple[str, str]:
    """The canary kinds for a clip's files: ("flv" | "mp4" | "", "wav" | "mp3" | "")."""
    video = ("flv" if Path(video_path).suffix.lower() == ".flv" else "mp4") if video_path else ""
    audio = ("wav" if Path(audio_path).suffix.lower() == ".wav" else "mp3") if audio_path else ""
    return video, audio


def write_canary(kind: str, folder: Path) -> Path:
    """One second of known-good media of `kind` in `folder`: a grey square that brightens over 30 frames of 480x360
    and a 220 Hz tone (flv: FLV1 + MP3; mp4: H.264 + AAC; wav: 16-bit PCM at 14.7 kHz, so it is resampled; mp3)."""
    from cremad_lit.data.synthetic import VIDEO_AUDIO_RATE, encode_video, write_wav

    t = np.arange(VIDEO_AUDIO_RATE) / VIDEO_AUDIO_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    path = Path(folder) / f"canary.{kind}"
    if kind in ("flv", "mp4"):
        frames = np.zeros((30, 360, 480, 3), np.uint8)
        frames[:, 100:260, 160:320] = (np.arange(30) * 8)[:, None, None, None]
        encode_video(path, frames, tone, kind)
    elif kind == "wav":
        write_wav(path, tone[::3], 14700)
    elif kind == "mp3":
        _write_mp3(path, tone.astype(np.float32), VIDEO_AUDIO_RATE)
    else:
        raise ValueError(f"no canary of kind {kind!r}")
    return path


def _write_mp3(path: Path, samples: np.ndarray, rate: int) -> None:
    import av

    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        size = stream.codec_context.frame_size or 1152
        for start in range(0, len(samples), size):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + size], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


FOLDER_PREFIX = "cremad-lit-canary-"  # then the writer's pid: a folder whose process is gone is litter


def remove_left_behind() -> None:
    """Canary folders of processes that are gone (a worker killed for a crash or a timeout never ran its atexit)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        pid = folder.name[len(FOLDER_PREFIX) :].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue


def canary_files(video_kind: str, audio_kind: str) -> tuple[str, str]:
    """Paths of this process's canary files of these kinds (written on first use)."""
    if not _FOLDER:
        remove_left_behind()
        folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        atexit.register(shutil.rmtree, folder, True)
        _FOLDER.append(folder)
    paths = []
    for kind in (video_kind, audio_kind):
        path = _FOLDER[0] / f"canary.{kind}"
        if kind and not path.is_file():
            write_canary(kind, _FOLDER[0])
        paths.append(str(path) if kind else "")
    return paths[0], paths[1]


def library_of(error: BaseException | None) -> str:
    """The installed package a failure came from: the innermost traceback frame inside site-packages that is not this
    project's, else a library file its message names, along the chain of causes; "unknown" when none says."""
    while error is not None:
        for frame in reversed(traceback.extract_tb(error.__traceback__)):
            found = re.search(r"[/\\](?:site|dist)-packages[/\\]([A-Za-z0-9_]+)", frame.filename)
            if found and found.group(1) != "cremad_lit":
                return found.group(1)
        found = re.search(r"(?:site|dist)-packages[/\\]([A-Za-z0-9_]+)|\b(lib\w+)\.so", str(error))
        if found:
            return next(g for g in found.groups() if g)
        error = error.__cause__
    return "unknown"


def check(
    canary_decode: Callable[[str, str], object], video_path: str, audio_path: str, purpose: str, error=None
) -> None:
    """Decode the canary of this clip's kinds with `canary_decode` (once per process and purpose while it passes);
    BrokenEnvironment when it fails: the failure of this clip (`error`) was not the file's."""
    video_kind, audio_kind = kinds(video_path, audio_path)
    key = (purpose, video_kind, audio_kind)
    if key in _GOOD:
        return
    try:
        canary_decode(*canary_files(video_kind, audio_kind))
    except Exception as canary_error:
        library = library_of(canary_error)
        if library == "unknown":
            library = library_of(error)
        failed = (
            f"{video_path or audio_path} failed ({describe(error)}), and so" if error is not None else "a"
        )
        raise BrokenEnvironment(
            f"the environment is broken, so the run stopped: {failed} does a known-good "
            f"{'/'.join(k for k in (video_kind, audio_kind) if k)} canary clip written by PyAV, decoded the same way "
            f"({describe(canary_error)}). The library: {library}. Nothing was recorded for this clip. "
            f"python -m cremad_lit doctor shows the whole environment; fix: {REINSTALL}"
        ) from error
    _GOOD.add(key)


def guarded(
    decode: Callable[[str, str], T],
    video_path: str,
    audio_path: str,
    purpose: str,
    canary_decode: Callable[[str, str], object] | None = None,
) -> T:
    """`decode(video_path, audio_path)`; when it fails the canary decides (`canary_decode`, default `decode`): a
    MediaError stays one and any other failure becomes one ("damaged: ..."), while the canary decodes; with a canary
    that fails too, BrokenEnvironment."""
    try:
        return decode(video_path, audio_path)
    except (Stop, MissingModality):  # nothing was decoded: no canary can speak to it
        raise
    except MediaError as error:
        check(canary_decode or decode, video_path, audio_path, purpose, error)
        raise
    except Exception as error:
        check(canary_decode or decode, video_path, audio_path, purpose, error)
        raise MediaError(
            video_path or audio_path, f"damaged: {describe(error)} (a known-good clip decodes the same way)"
        ) from error
