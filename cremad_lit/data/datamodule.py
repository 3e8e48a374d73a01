"""Dataset and LightningDataModule: catalog -> actor-disjoint split -> (cached) features -> batches.

    python -m cremad_lit prepare data.root=/path/to/CREMA-D     # optional: fill the cache up front
    python train.py data.root=/path/to/CREMA-D                  # the DataModule is built from conf/data/

A batch is a dict: `frames` B x T x 3 x H x W float, `mel` B x 1 x 64 x 128 float, `label` B long, `clip_id` list,
and with `data.functionals=egemaps|compare` `functionals` B x 88 | 6373 float.
Only the modalities asked for are decoded and batched. Clips that cannot be decoded are skipped with a logged reason
(and listed in the cache's skipped.json), never crashing an epoch; cached clips without a modality the run needs (a
silent video in an audio-visual run) are left out by name (`left_out`, in prepare_report.json). prepare_data also
draws faces.png, the cropped frames of a few clips per emotion, into the run dir.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from cremad_lit.data.augment import Augment
from cremad_lit.data.cache import ClipCache, source_key
from cremad_lit.data.catalog import build_catalog, unlabelled_speech
from cremad_lit.data.dataset import (
    SPEAKER_NORMS,
    SPEAKER_STATS,
    ClipDataset,
    collate_skipping_bad,
    speaker_mel_stats,
)
from cremad_lit.data.faces import load_detector
from cremad_lit.data.features import Preprocessing, decode_clip
from cremad_lit.data.functionals import FUNCTIONALS, feature_dir, functionals_features, normalise_by_speaker
from cremad_lit.data.labels import resolve_classes
from cremad_lit.data.loader import CrashTolerantLoader
from cremad_lit.data.media import MediaError, read_audio
from cremad_lit.data.splits import (
    LEAKY_WARNING,
    choose_split,
    hold_out_lockbox,
    hold_out_outer_test,
    save_split,
    split_key,
)
from cremad_lit.io import write_json

log = logging.getLogger(__name__)
MODALITIES = ("audio", "video")
CACHE_MODES = ("auto", "off", "require")


class EmotionDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str | None,
        preprocessing: dict,
        dataset: str = "cremad",
        manifest: str | None = None,
        label_map: dict | None = None,
        options: dict | None = None,
        frame_mean=(0.5, 0.5, 0.5),
        frame_std=(0.5, 0.5, 0.5),
        modalities=MODALITIES,
        split: dict | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        decoder: str = "decord",
        cache: str = "auto",
        cache_dir: str = "data/cache",
        prepare_workers: int = 0,
        decode_timeout_s: float | None = None,
        augment: dict | None = None,
        output_dir: str | None = None,
        generate: dict | None = None,
        eval_split: str = "test",
        speaker_norm: str = "none",
        # Whose speech the speaker statistics read: all_speech (also the clips left out for their label) or classes
        # (only the clips of the kept classes: what a model trained before 0.8 was, and the default for its config).
        speaker_stats: str = "classes",
        functionals: str = "none",
        classes="default",
        audio_input: str = "mel",
    ):
        super().__init__()
        self.audio_input = (
            audio_input  # set by build_datamodule from the net: mel, or waveform for speech encoders
        )
        self.cached_features: dict[
            str, str
        ] = {}  # modality -> a frozen encoder's feature cache (encoder_cache.py)
        self.classes_setting = list(classes) if not isinstance(classes, str) else classes
        modalities = tuple(modalities)
        if not modalities or set(modalities) - set(MODALITIES):
            raise ValueError(
                f"data.modalities must be a non-empty subset of {list(MODALITIES)}, not {list(modalities)}"
            )
        if speaker_norm not in SPEAKER_NORMS:
            raise ValueError(f"data.speaker_norm must be one of {SPEAKER_NORMS}, not {speaker_norm!r}")
        if functionals not in FUNCTIONALS:
            raise ValueError(f"data.functionals must be one of {FUNCTIONALS}, not {functionals!r}")
        if speaker_stats not in SPEAKER_STATS:
            raise ValueError(f"data.speaker_stats must be one of {SPEAKER_STATS}, not {speaker_stats!r}")
        self.speaker_norm, self.speaker_stats, self.functionals = speaker_norm, speaker_stats, functionals
        self.cache_dir = cache_dir
        if cache not in CACHE_MODES:
            raise ValueError(f"data.cache must be one of {CACHE_MODES}, not {cache!r}")
        if root is None and not manifest:
            raise ValueError("data.root is not set (data.manifest=PATH.csv for data=manifest)")
        # A manifest's clips live where its paths say; its folder stands for the root in reports.
        self.root = str(Path(manifest).expanduser().parent if root is None else root)
        self.dataset, self.manifest, self.label_map = (
            dataset,
            manifest,
            dict(label_map) if label_map else label_map,
        )
        self.options = dict(options or {})
        self.prep, self.modalities = Preprocessing(**preprocessing), modalities
        if (
            "video" in modalities
        ):  # a detector this install cannot run (haar on OpenCV 5) is one error, up front
            load_detector(self.prep.face_crop)
        self.frame_mean, self.frame_std = tuple(frame_mean), tuple(frame_std)
        self.split_config = dict(split or {})
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.loader_options = dict(
            num_workers=num_workers,
            # Pinned pages only help a copy to an accelerator (and torch warns on every loader without one).
            pin_memory=pin_memory and torch.accelerator.is_available(),
            persistent_workers=persistent_workers and num_workers > 0,
        )
        self.decoder, self.cache_mode, self.prepare_workers = decoder, cache, prepare_workers
        self.decode_timeout_s = decode_timeout_s  # per clip, in prepare's worker processes (None: no limit)
        self.cache_source = source_key(dataset, manifest or self.root)
        self.cache = ClipCache(cache_dir, self.prep, self.cache_source) if cache != "off" else None
        augment = dict(augment or {})
        self.augment = (
            Augment(**{k: v for k, v in augment.items() if k != "enabled"})
            if augment.get("enabled", False)
            else None
        )
        self.output_dir = Path(output_dir) if output_dir else None
        self.generate = generate
        # What test_dataloader serves: test (default), val, train, all clips, or the lockbox (split.lockbox's speakers)
        self.eval_split = eval_split
        self.clips: pd.DataFrame | None = None
        self.split: pd.DataFrame | None = None
        self.datasets: dict[str, ClipDataset] = {}
        self.loaders: list[CrashTolerantLoader] = []
        self.protocol: dict = {}  # how the split was made, for metrics.json (set up with the split)
        self.lockbox: list = []  # split.lockbox's speakers (set up with the split)
        self.left_out: list[dict] = []  # cached clips without a modality this run needs (a silent video, say)
        self._catalog: pd.DataFrame | None = None
        self._unlabelled: pd.DataFrame | None = None
        self.speaker_index: dict = {}  # training speaker -> its number (the batches' `speaker`)
        self.encoder_plans: dict = {}  # frozen encoders whose features setup caches (cache_encoder_features)
        self.encoder_device = "cpu"
        self.encoder_reports: dict = {}

    @property
    def scan_root(self) -> str | None:
        """The folder the adapter scans (None for a manifest, whose rows say where each clip is)."""
        return self.root if self.manifest is None else None

    def catalog(self) -> pd.DataFrame:
        """Every usable clip of the corpus for these modalities (read once); rejections in `.attrs["rejected"]`."""
        if self._catalog is None:
            self._catalog = build_catalog(
                self.scan_root,
                self.dataset,
                self.modalities,
                self.label_map,
                self.manifest,
                self.options,
                self.classes_setting,
            )
        return self._catalog

    def unlabelled(self) -> pd.DataFrame:
        """The corpus's clips left out only for their label (RAVDESS's calm and surprised by default): speech the
        speaker statistics read with data.speaker_stats=all_speech, never a training or test clip (read once)."""
        if self._unlabelled is None:
            self._unlabelled = unlabelled_speech(
                self.scan_root,
                self.dataset,
                self.manifest,
                self.options,
                self.catalog().attrs["rejected"],
            )
        return self._unlabelled

    def speaker_speech(self, clips: pd.DataFrame | None = None) -> pd.DataFrame:
        """The clips whose speech the speaker statistics read: `clips` (default: those set up) and, with
        data.speaker_stats=all_speech, every other clip of the same speakers that was left out only for its label
        (split "unlabelled"). A person's statistics then do not depend on which of their clips carry a kept label."""
        clips = self.clips if clips is None else clips
        if self.speaker_stats == "classes":
            return clips
        other = self.unlabelled()
        other = other[other["actor_id"].isin(set(clips["actor_id"]))]
        if not len(other):
            return clips
        return pd.concat([clips, other.assign(split="unlabelled")], ignore_index=True)

    @property
    def classes(self) -> tuple[str, ...]:
        """The ordered class list, resolved once: label i is classes[i]. data.classes=default is the six whatever the
        corpus holds (nothing to read: a generated corpus may not exist yet); any other setting reads the corpus's
        labels (the catalog, kept for setup)."""
        if self.classes_setting in (None, "default"):
            return resolve_classes([], "default")
        return tuple(self.catalog().attrs["classes"])

    def cache_encoder_features(self, net, device: str = "cpu", frame_mixup: bool = False) -> None:
        """Let the frozen encoders of `net` run once per clip: setup fills (or reuses) their feature cache and the
        datasets read it (encoder_cache.py); `encoder_reports` then says what was filled."""
        from cremad_lit.encoder_cache import encoder_plans

        self.encoder_plans, self.encoder_device = encoder_plans(net, self.augment, frame_mixup), device
        if self.encoder_plans and self.cache is None:
            log.info("data.cache=off: no encoder feature cache, the frozen encoders run on every batch")
            self.encoder_plans = {}

    def use_frame_spec(self, spec: dict) -> None:
        """What the net reads, given once the net exists: the frame size, mean and std of its video backbone and its
        audio input (mel or waveform). The frame size is part of the cache key."""
        self.prep = dataclasses.replace(self.prep, image_size=int(spec["image_size"]))
        self.frame_mean, self.frame_std = tuple(spec["mean"]), tuple(spec["std"])
        self.audio_input = spec.get("audio_input", "mel")
        if self.cache is not None:
            self.cache = ClipCache(self.cache_dir, self.prep, self.cache_source)

    @property
    def split_by(self) -> str:
        """actor, or clip for a split where speakers are on both sides (split.by=clip, leaky clip lists)."""
        if self.protocol.get("leaky"):
            return "clip"
        return str(self.split_config.get("by", "actor"))

    # -- on one process per node: generate the synthetic data, fill the cache --------------------------------------
    def prepare_data(self) -> None:
        if self.generate:  # idempotent: writes only the clips that are missing
            from cremad_lit.data.synthetic import generate

            generate(self.root, **self.generate)
        clips = self.catalog()
        report = {
            "dataset": self.dataset,
            "root": self.manifest or self.root,
            "rejected": clips.attrs["rejected"],
        }
        if self.cache_mode == "auto":
            report.update(
                self.cache.build(
                    clips, self.decoder, self.prepare_workers, decode_timeout_s=self.decode_timeout_s
                )
            )
        if self.cache is not None:
            report["left_out"] = self.cache.lacking(clips, self.modalities)
        if self.functionals != "none":
            report["functionals_skipped"] = self.functional_features(self.speaker_speech(clips))[1]
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.output_dir / "prepare_report.json", report)

    def usable(self, clips: pd.DataFrame) -> pd.DataFrame:
        """The clips this run can read: without those the cache could not decode or that lack a modality it needs
        (each left out with its reason); with data.cache=require, every one already prepared."""
        if self.cache is not None:
            skipped = self.cache.skipped()
            if skipped:
                log.warning(
                    "leaving out %d clips that could not be decoded (see %s)",
                    len(skipped),
                    self.cache.skipped_file,
                )
                clips = clips[~clips["clip_id"].isin(skipped)]
            self.left_out = self.cache.lacking(clips, self.modalities)
            if self.left_out:
                reasons = Counter(f"no {r['modality']}: {r['reason']}" for r in self.left_out)
                log.warning(
                    "leaving out %d clips without a modality this run needs (data.modalities=%s): %s; e.g. %s",
                    len(self.left_out),
                    list(self.modalities),
                    dict(reasons.most_common(3)),
                    [r["path"] for r in self.left_out[:3]],
                )
                clips = clips[~clips["clip_id"].isin({r["clip_id"] for r in self.left_out})]
            if self.cache_mode == "require":
                missing = [c for c in clips["clip_id"] if not self.cache.has(c)]
                if missing:
                    raise FileNotFoundError(
                        f"data.cache=require but {len(missing)} clips are not in {self.cache.dir} (e.g. {missing[0]}); "
                        "run `python -m cremad_lit prepare` with the same data settings first"
                    )
        return clips

    # -- on every process --------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        clips = self.usable(self.catalog())
        clips, self.lockbox = hold_out_lockbox(clips, self.split_config.get("lockbox"), self.eval_split)
        clips, split_config, nested = hold_out_outer_test(clips, self.split_config, self.split_by)
        self.split, self.protocol = choose_split(
            clips, split_config, self.split_by, self.eval_split, self.lockbox
        )
        if nested:
            self.protocol["nested"] = nested
        functionals = None
        if self.functionals != "none":
            speech = self.speaker_speech(clips)
            features, skipped = self.functional_features(speech)
            skipped = [s for s in skipped if s["clip_id"] in set(clips["clip_id"])]
            if skipped:
                log.warning(
                    "leaving out %d clips without %s features: %s",
                    len(skipped),
                    self.functionals,
                    skipped[:3],
                )
                clips = clips[clips["clip_id"].isin(features)]
            speech = speech[speech["clip_id"].isin(features)]
            speakers = dict(zip(speech["clip_id"], speech["actor_id"], strict=True))
            features = {c: features[c] for c in speech["clip_id"]}
            normalised = normalise_by_speaker(features, speakers, self.speaker_norm)
            functionals = {c: normalised[c] for c in clips["clip_id"]}
        key = split_key(self.split)
        if key == "clip_id" and self.protocol["protocol"] != "lists":
            log.warning(LEAKY_WARNING)
        clips = clips.merge(self.split[[key, "split"]], on=key, how="left")
        self.clips = clips
        if self.output_dir is not None and (self.trainer is None or self.trainer.is_global_zero):
            save_split(self.split, self.output_dir / "split.csv")
        speaker_stats = None
        if self.speaker_norm != "none" and "audio" in self.modalities:
            reader = ClipDataset(
                clips,
                self.prep,
                self.modalities,
                self.frame_mean,
                self.frame_std,
                classes=self.classes,
                cache=self.cache,
                decoder=self.decoder,
            )
            speaker_stats = speaker_mel_stats(self.speaker_speech(clips), reader, self.speaker_norm)
        training = sorted(clips.loc[clips["split"] == "train", "actor_id"].unique(), key=str)
        self.speaker_index = {actor: i for i, actor in enumerate(training)}
        for name in ("train", "val", "test", "all"):
            self.datasets[name] = ClipDataset(
                clips if name == "all" else clips[clips["split"] == name],
                self.prep,
                self.modalities,
                self.frame_mean,
                self.frame_std,
                classes=self.classes,
                cache=self.cache,
                decoder=self.decoder,
                augment=self.augment if name == "train" else None,
                speaker_stats=speaker_stats,
                functionals=functionals,
                audio_input=self.audio_input,
                cached_features=self.cached_features,
                speaker_index=self.speaker_index,
            )
        sizes = {name: len(self.datasets[name]) for name in ("train", "val", "test")}
        # Speakers, counted from the clips: a clip split (published lists) puts the same speaker in several splits.
        speakers = {name: self.datasets[name].clips["actor_id"].nunique() for name in sizes}
        log.info(
            "clips per split %s, speakers per split %s%s",
            sizes,
            speakers,
            " (the same speakers on several sides: a clip split)" if key == "clip_id" else "",
        )
        if self.encoder_plans:
            from cremad_lit.encoder_cache import fill_encoder_caches

            self.encoder_reports = fill_encoder_caches(self.encoder_plans, self, self.encoder_device)

    def face_rows(self, per_emotion: int = 2, fallbacks: int = 4) -> tuple[list[dict], str]:
        """What faces.png shows (plots.draw_faces): the stored (cropped) frames of `per_emotion` clips of each
        emotion, from different speakers where there are, then up to `fallbacks` clips where no face was found
        (marked); and its title. No rows without cached frames."""
        clips = self.catalog()
        infos = self.cache.infos(clips["clip_id"])
        with_frames = clips[clips["clip_id"].map(lambda c: c in infos and "faces" in infos[c])]
        title = (
            f"What the video branch sees (face_crop={self.prep.face_crop}; "
            f"{'cyan: the aligned landmarks; ' if self.prep.face_crop == 'mtcnn' else ''}red: no face found, centre square)"
        )
        if not len(with_frames):
            return [], title
        chosen = []
        for _, group in with_frames.groupby("emotion", sort=True):
            chosen += list(group.drop_duplicates("actor_id")["clip_id"][:per_emotion])
        fell_back = [c for c in with_frames["clip_id"] if infos[c]["faces"]["kind"] == "centre"]
        chosen += [c for c in fell_back if c not in chosen][:fallbacks]
        emotion = dict(zip(clips["clip_id"], clips["emotion"], strict=True))
        rows = []
        for clip_id in chosen:
            face = infos[clip_id]["faces"]
            rows.append(
                {
                    "frames": self.cache.load(clip_id, ("frames",))["frames"],
                    "label": f"{emotion[clip_id]} {clip_id}\n{face['kind']} {face['found']}/{face['searched']}",
                    "fallback": face["kind"] == "centre",
                    "landmarks": face.get("crop_landmarks"),  # face_crop=mtcnn: where the aligned points are
                }
            )
        return rows, title

    def functional_features(self, clips: pd.DataFrame) -> tuple[dict, list[dict]]:
        """clip_id -> the functionals of `clips` (cached beside the clip cache), and the clips that failed."""
        at = feature_dir(self.cache_dir, self.cache_source, self.prep.sample_rate, self.functionals)
        return functionals_features(
            clips, at, self.prep, self.prepare_workers, self.functionals, self.decode_timeout_s
        )

    def speakers(self) -> dict:
        """clip_id -> speaker (actor) of every clip set up."""
        return dict(zip(self.clips["clip_id"], self.clips["actor_id"], strict=True))

    def tested_on(self, split: str = "test", actors_key: str = "test_actors") -> dict:
        """What a metrics.json says of the data its numbers come from (train, evaluate and the baseline write it)."""
        return {
            "split": split,
            "split_by": self.split_by,
            "protocol": self.protocol,
            "dataset": self.dataset,
            actors_key: self.actors(split),
        }

    def actors(self, split: str) -> list:
        """The actors (speakers) whose clips are in `split` (`all`: every one; `lockbox`: the lockbox, when opened)."""
        clips = self.clips if split in ("all", "lockbox") else self.clips[self.clips["split"] == split]
        return sorted(a.item() if hasattr(a, "item") else a for a in clips["actor_id"].unique())

    def clip_media(self, clip_id: str) -> dict:
        """What a person would look at for one clip: its actor, the stored frames and Mel (uint8 frames, dB Mel)
        and its audio (16 kHz mono), for the predictions table. Empty where the clip cannot be decoded."""
        row = self.clips.set_index("clip_id").loc[clip_id]
        media = {"actor": row["actor_id"]}
        try:
            if self.cache is not None and self.cache.has(clip_id):
                media.update(self.cache.load(clip_id))
            else:
                media.update(
                    decode_clip(
                        row["video_path"], row["audio_path"], self.prep, self.decoder, self.modalities
                    )
                )
            if "audio" in self.modalities:
                media["audio"] = read_audio(
                    row["video_path"],
                    row["audio_path"],
                    self.prep.audio_source,
                    self.prep.sample_rate,
                    self.decoder,
                )
                media["sample_rate"] = self.prep.sample_rate
        except MediaError as error:
            log.warning("no media for %s in the predictions table: %s", clip_id, error)
        return media

    def training_speakers(self) -> int:
        """How many speakers the training split holds (sets the data up)."""
        self.setup("fit")
        return len(self.speaker_index)

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights of the training clips, mean 1, in the order of `classes` (sets the data up)."""
        if "train" not in self.datasets:
            self.prepare_data()
            self.setup("fit")
        counts = np.bincount(self.datasets["train"].labels, minlength=len(self.classes)).astype(np.float64)
        weights = counts.sum() / (len(self.classes) * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        loader = CrashTolerantLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=collate_skipping_bad,
            **self.loader_options,
        )
        self.loaders.append(loader)
        return loader

    def decoder_crashes(self) -> list[dict]:
        """The clips a DataLoader worker crashed on (data/loader.py), skipped, each once."""
        crashes = {c["clip_id"]: c for loader in self.loaders for c in loader.crashes}
        return list(crashes.values())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if self.eval_split == "lockbox" else self.eval_split, shuffle=False)


# The name in the configs stored by checkpoints and runs before 0.8 (evaluate.py rebuilds the data from them).
CremaDataModule = EmotionDataModule
