"""One clip as tensors: the torch Dataset the DataModule batches, speaker statistics, and the collate that skips bad clips.

    dataset = ClipDataset(clips, prep, ["audio"], mean, std, classes=EMOTIONS, cache=ClipCache(...))
    sample = dataset[0]      # {"label", "clip_id", "mel"[, "frames", "functionals"]} or {"clip_id", "error"}
    # with a frozen encoder's feature cache, "audio_features" / "video_features" stand for "waveform" / "frames"

Built by EmotionDataModule (datamodule.py); predict uses `speaker_stats` for files grouped into speakers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate
from tqdm import tqdm

from cremad_lit.data.augment import Augment
from cremad_lit.data.cache import ClipCache, DamagedEntry
from cremad_lit.data.encoder_cache import entry_of, read_entry
from cremad_lit.data.features import (
    Preprocessing,
    clip_info,
    decode_clip,
    normalise_frames,
    normalise_mel,
    waveform_tensor,
)
from cremad_lit.data.loader import note_in_flight
from cremad_lit.data.media import MediaError, read_audio

log = logging.getLogger(__name__)
STORED_AS = {"audio": "mel", "video": "frames"}  # each modality's array in a cache entry
AUDIO_INPUTS = (
    "mel",
    "waveform",
)  # what the audio branch reads: the Mel image, or the waveform (speech encoders)
# none | mean: subtract each speaker's mean Mel spectrum (per band, over all of that speaker's speech: no labels used;
# data.speaker_stats says whose clips count)
# | standard: also divide by the speaker's per-band std. Speaker-level CMVN, as in Kaldi's recipes. The functionals
# (data.functionals) get the same, feature by feature. Without a cache the statistics cost one more decoding pass.
SPEAKER_NORMS = ("none", "mean", "standard")


class ClipDataset(Dataset):
    def __init__(
        self,
        clips: pd.DataFrame,
        prep: Preprocessing,
        modalities,
        frame_mean,
        frame_std,
        *,
        classes,  # the run's ordered class list: label i is classes[i]
        cache: ClipCache | None = None,
        decoder: str = "decord",
        augment: Augment | None = None,
        speaker_stats: dict | None = None,
        functionals: dict | None = None,
        audio_input: str = "mel",
        cached_features: dict | None = None,
        speaker_index: dict | None = None,
    ):
        # modality -> a frozen encoder's feature cache folder (encoder_cache.py): its stored outputs stand for the
        # modality's media, so that encoder never runs.
        self.cached_features = {m: Path(d) for m, d in (cached_features or {}).items()}
        if audio_input not in AUDIO_INPUTS:
            raise ValueError(f"audio_input must be one of {AUDIO_INPUTS}, not {audio_input!r}")
        self.audio_input = audio_input
        self.clips = clips.reset_index(drop=True)
        self.speaker_stats, self.functionals = speaker_stats, functionals
        self.prep, self.modalities, self.cache, self.decoder, self.augment = (
            prep,
            tuple(modalities),
            cache,
            decoder,
            augment,
        )
        self.frame_mean, self.frame_std = tuple(frame_mean), tuple(frame_std)
        self.labels = self.clips["emotion"].map(list(classes).index).to_numpy()
        # Each training speaker's number (-1 for any other), for a speaker-adversarial head (loss.speaker_adversary).
        index = speaker_index or {}
        self.speaker_ids = np.array(
            [index.get(actor, -1) for actor in self.clips["actor_id"]], dtype=np.int64
        )
        self.in_flight = None  # set by CrashTolerantLoader (data/loader.py): which clip each worker is on

    @property
    def decodes_on_the_fly(self) -> bool:
        """Whether reading a clip runs a decoder (no prepared cache for a modality read from media)."""
        return self.cache is None and any(m not in self.cached_features for m in self.modalities)

    def __len__(self) -> int:
        return len(self.clips)

    def stored(self, row, modalities=None) -> dict:
        """The clip's stored tensors (from the cache, else decoded now) for `modalities` (default: the dataset's);
        MediaError if it cannot be decoded."""
        modalities = self.modalities if modalities is None else modalities
        if self.cache is not None and self.cache.has(row.clip_id):
            names = {modality: STORED_AS[modality] for modality in modalities}
            # A waveform branch still loads the small Mel image: the speaker statistics are computed on it.
            extra = ("mel",) if "audio" in names and self.audio_input == "waveform" else ()
            if extra:
                names["audio"] = "waveform"
            wanted = (*names.values(), *extra, "info")
            try:
                stored = self.cache.load(row.clip_id, wanted)
            except DamagedEntry as damage:
                log.warning("%s: decoding %s again", damage, row.video_path or row.audio_path)
                sample = self.cache.decode_again(row.clip_id, row.video_path, row.audio_path, self.decoder)
                stored = {name: value for name, value in sample.items() if name in wanted}
            for modality, name in names.items():
                if name not in stored:
                    reason = clip_info(stored).get("absent", {}).get(modality, f"no {modality} stored")
                    raise MediaError(row.video_path or row.audio_path, f"no {modality}: {reason}")
            return stored
        return decode_clip(row.video_path, row.audio_path, self.prep, self.decoder, modalities)

    def waveform(self, row) -> torch.Tensor:
        """The clip's waveform (float, -1..1); MediaError if it has none."""
        return waveform_tensor(self.stored(row, ("audio",))["waveform"])

    def frames(self, row) -> torch.Tensor:
        """The clip's frames as the video backbone takes them (T x 3 x H x W, normalised, never augmented)."""
        return normalise_frames(
            torch.from_numpy(self.stored(row, ("video",))["frames"]), self.frame_mean, self.frame_std
        )

    def __getitem__(self, index: int) -> dict:
        note_in_flight(self.in_flight, index)
        try:
            return self._item(index)
        finally:
            note_in_flight(self.in_flight, -1)

    def _item(self, index: int) -> dict:
        row = self.clips.iloc[index]
        cached = [m for m in self.modalities if m in self.cached_features]
        try:
            features = {m: self.cached_feature(row, m) for m in cached}
            raw = tuple(m for m in self.modalities if m not in cached)
            stored = self.stored(row, raw) if raw else {}
        except MediaError as error:
            return {"clip_id": row.clip_id, "error": str(error)}
        sample = {
            "label": int(self.labels[index]),
            "speaker": int(self.speaker_ids[index]),
            "clip_id": row.clip_id,
        }
        sample.update({f"{m}_features": value for m, value in features.items()})
        sample.update(model_inputs(stored, raw, self.frame_mean, self.frame_std, self.audio_input))
        if "frames" in sample and self.augment:
            sample["frames"] = self.augment.frames(sample["frames"])
        if "mel" in sample:
            if self.speaker_stats is not None:
                mean, std = self.speaker_stats[row.actor_id]
                sample["mel"] = (sample["mel"] - mean) / std
            if self.augment:
                sample["mel"] = self.augment.mel(sample["mel"])
        if self.functionals is not None:
            sample["functionals"] = torch.from_numpy(self.functionals[row.clip_id])
        return sample

    def cached_feature(self, row, modality: str) -> torch.Tensor:
        entry = entry_of(self.cached_features[modality], row.clip_id)
        if not entry.is_file():
            path = (
                (row.audio_path if modality == "audio" else row.video_path)
                or row.video_path
                or row.audio_path
            )
            raise MediaError(
                path, f"not in the encoder feature cache {entry.parent} (its {modality} was unreadable)"
            )
        try:
            return torch.from_numpy(read_entry(entry)).float()
        except (ValueError, OSError) as error:
            entry.unlink(missing_ok=True)  # cut short or damaged on disk: the next fill computes it again
            raise MediaError(
                entry, f"encoder feature entry is damaged ({error}); removed, computed again"
            ) from error


def model_inputs(stored: dict, modalities, frame_mean, frame_std, audio_input: str = "mel") -> dict:
    """One clip's decoded arrays (decode_clip's or the cache's) as the tensors the net reads, without a batch axis:
    the one conversion the dataset and predict share (before speaker normalisation and augmentation)."""
    inputs = {}
    if "video" in modalities:
        inputs["frames"] = normalise_frames(torch.from_numpy(stored["frames"]), frame_mean, frame_std)
    if "audio" in modalities and audio_input == "waveform":
        inputs["waveform"] = waveform_tensor(stored["waveform"])
    elif "audio" in modalities:
        inputs["mel"] = normalise_mel(torch.from_numpy(stored["mel"]))
    return inputs


def speaker_stats(mels, mode: str) -> dict:
    """speaker -> (mean, std), each 1 x F x 1: per-band statistics over all the normalised Mel images of a speaker,
    from (speaker, mel) pairs (std 1 with mode="mean")."""
    sums: dict = {}
    for speaker, mel in mels:
        mel = mel.double()
        total = sums.setdefault(speaker, [0, 0.0, 0.0])
        total[0] += mel.shape[-1]
        total[1] = total[1] + mel.sum(dim=-1, keepdim=True)
        total[2] = total[2] + (mel**2).sum(dim=-1, keepdim=True)
    stats = {}
    for speaker, (count, total, squares) in sums.items():
        mean = total / count
        std = (squares / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-2)
        stats[speaker] = (mean.float(), std.float() if mode == "standard" else torch.ones_like(mean).float())
    return stats


def speaker_mel_stats(clips: pd.DataFrame, reader: ClipDataset, mode: str) -> dict:
    """`speaker_stats` of every actor of `clips`, over all of their clips (their Mel read through `reader`, from its
    cache or decoded; labels unused); undecodable clips are left out."""

    def mels():
        for row in tqdm(clips.itertuples(), total=len(clips), desc="speaker statistics", unit="clip"):
            try:
                yield row.actor_id, normalise_mel(torch.from_numpy(reader.stored(row, ("audio",))["mel"]))
            except MediaError:
                continue

    return speaker_stats(mels(), mode)


def collate_skipping_bad(samples: list[dict]) -> dict | None:
    """Batch the good samples; log and drop the ones that failed to decode (None if none is left)."""
    good = []
    for sample in samples:
        if "error" in sample:
            log.warning("skipped clip %s: %s", sample["clip_id"], sample["error"])
        else:
            good.append(sample)
    if not good:
        return None
    # Waveforms and a speech encoder's stored time steps differ in length: zero-padded to the longest along time,
    # with each one's length beside it.
    variable = [
        key
        for key in ("waveform", "audio_features")
        if key in good[0] and (key == "waveform" or good[0][key].ndim == 3)
    ]
    ragged = {key: [sample.pop(key) for sample in good] for key in variable}
    batch = default_collate(good)
    for key, values in ragged.items():
        batch[f"{key}_lengths"] = torch.tensor([len(v) for v in values])
        batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True)
    return batch


def clip_media(
    row, prep: Preprocessing, modalities, decoder: str = "decord", cache: ClipCache | None = None
) -> dict:
    """What a person would look at for one clip (a catalog row): its actor, the stored frames and Mel (uint8 frames,
    dB Mel, from `cache` where it holds the clip) and its audio (16 kHz mono), for the predictions table. Only the
    actor where the clip cannot be decoded."""
    clip_id = row.get("clip_id", row.name)
    media = {"actor": row["actor_id"]}
    try:
        if cache is not None and cache.has(clip_id):
            media.update(cache.load(clip_id))
        else:
            media.update(decode_clip(row["video_path"], row["audio_path"], prep, decoder, modalities))
        if "audio" in modalities:
            media["audio"] = read_audio(
                row["video_path"], row["audio_path"], prep.audio_source, prep.sample_rate, decoder
            )
            media["sample_rate"] = prep.sample_rate
    except MediaError as error:
        log.warning("no media for %s in the predictions table: %s", clip_id, error)
    return media


def media_of(clips: pd.DataFrame, prep: Preprocessing, modalities, decoder: str = "decord", cache=None):
    """clip_id -> clip_media of that clip of `clips` (the predictions table's lookup)."""
    rows = clips.set_index("clip_id")
    return lambda clip_id: clip_media(rows.loc[clip_id], prep, modalities, decoder, cache)
