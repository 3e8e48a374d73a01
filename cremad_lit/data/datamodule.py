"""Dataset and LightningDataModule: a Corpus's assigned clips -> (cached) features -> batches.

    python -m cremad_lit prepare data.root=/path/to/CREMA-D     # optional: fill the cache up front
    python train.py data.root=/path/to/CREMA-D                  # the DataModule is built from conf/data/

    datamodule = EmotionDataModule.from_config(cfg.data, ModelInputs.of(net, cfg.model))   # pipeline.build_datamodule

Built from a Corpus (corpus.py: which clips, classes, speakers, protocol) and a few grouped settings (preprocessing,
loader, cache, normalisation, augmentation), with what it must know of the model handed over once, at construction, as
`ModelInputs` (frame size, mean and std, the audio input, frozen encoders whose outputs it may cache). It never sees
the model otherwise, and every public method may be called in any order: the first that needs the data set up sets it
up, the same way.

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
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, WeightedRandomSampler

from cremad_lit.data import encoder_cache
from cremad_lit.data.augment import Augment
from cremad_lit.data.cache import ClipCache
from cremad_lit.data.corpus import Assignment, Corpus
from cremad_lit.data.dataset import (
    SPEAKER_NORMS,
    ClipDataset,
    collate_skipping_bad,
    media_of,
    speaker_mel_stats,
)
from cremad_lit.data.faces import load_detector
from cremad_lit.data.features import Preprocessing
from cremad_lit.data.functionals import FUNCTIONALS, feature_dir, functionals_features, normalise_by_speaker
from cremad_lit.data.loader import CrashTolerantLoader
from cremad_lit.data.splits import save_split
from cremad_lit.io import write_json

log = logging.getLogger(__name__)
CACHE_MODES = ("auto", "off", "require")


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What the data must know of the model: the frames its video backbone reads (size, mean, std), what its audio
    branch reads (`mel` or `waveform`), and its frozen encoders (`frozen`: {modality: encoder}, each with the small
    interface data/encoder_cache.py reads: `model`, `input_spec()`, and a forward on the stored input), whose outputs
    the data may cache. `frame_mixup`: training blends frames, so a frozen video encoder must run on every batch."""

    image_size: int | None = None  # None: the preprocessing's own
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    audio_input: str = "mel"
    frozen: dict = dataclasses.field(default_factory=dict)
    frame_mixup: bool = False
    device: str = "cpu"  # where the frozen encoders fill their cache

    @classmethod
    def of_spec(cls, spec: dict, **more) -> ModelInputs:
        """From a frame spec ({image_size, mean, std[, audio_input]}: pipeline.cache_frame_spec)."""
        return cls(
            int(spec["image_size"]),
            tuple(spec["mean"]),
            tuple(spec["std"]),
            spec.get("audio_input", "mel"),
            **more,
        )


@dataclasses.dataclass(frozen=True)
class LoaderSettings:
    batch_size: int = 8
    eval_batch_size: int | None = None  # None: batch_size
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    mode: str = "auto"  # auto (build on first use) | off (decode on the fly) | require (fail if not prepared)
    dir: str = "data/cache"
    decoder: str = "decord"
    prepare_workers: int = 0
    decode_timeout_s: float | None = None  # per clip, in prepare's worker processes (None: no limit)

    def __post_init__(self):
        if self.mode not in CACHE_MODES:
            raise ValueError(f"data.cache must be one of {CACHE_MODES}, not {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class Normalisation:
    speaker_norm: str = (
        "none"  # per-speaker normalisation of the Mel and the functionals (dataset.SPEAKER_NORMS)
    )
    functionals: str = "none"  # none | egemaps | compare: a functionals branch's features per clip

    def __post_init__(self):
        if self.speaker_norm not in SPEAKER_NORMS:
            raise ValueError(f"data.speaker_norm must be one of {SPEAKER_NORMS}, not {self.speaker_norm!r}")
        if self.functionals not in FUNCTIONALS:
            raise ValueError(f"data.functionals must be one of {FUNCTIONALS}, not {self.functionals!r}")


def _settings(kind, data: dict, **names) -> object:
    """A settings dataclass from the flat data config (`names`: field -> config key where they differ)."""
    fields = {
        f.name: data[names.get(f.name, f.name)]
        for f in dataclasses.fields(kind)
        if names.get(f.name, f.name) in data
    }
    return kind(**fields)


class EmotionDataModule(L.LightningDataModule):
    def __init__(
        self,
        corpus: Corpus,
        preprocessing: Preprocessing,
        inputs: ModelInputs = ModelInputs(),
        loader: LoaderSettings = LoaderSettings(),
        cache: CacheSettings = CacheSettings(),
        normalisation: Normalisation = Normalisation(),
        augment: Augment | None = None,
        eval_split: str = "test",
        output_dir: str | None = None,
    ):
        super().__init__()
        self.corpus, self.inputs, self.normalisation, self.augment = corpus, inputs, normalisation, augment
        # The frame size is the video backbone's, and part of the cache key.
        if inputs.image_size is not None:
            preprocessing = dataclasses.replace(preprocessing, image_size=int(inputs.image_size))
        self.prep = preprocessing
        if (
            "video" in corpus.modalities
        ):  # a detector this install cannot run (haar on OpenCV 5) is one error, up front
            load_detector(self.prep.face_crop)
        self.batch_size = loader.batch_size
        self.eval_batch_size = loader.eval_batch_size or loader.batch_size
        self.loader_options = dict(
            num_workers=loader.num_workers,
            # Pinned pages only help a copy to an accelerator (and torch warns on every loader without one).
            pin_memory=loader.pin_memory and torch.accelerator.is_available(),
            persistent_workers=loader.persistent_workers and loader.num_workers > 0,
        )
        self.cache_settings = cache
        self.cache_source = corpus.cache_source
        self.cache = ClipCache(cache.dir, self.prep, self.cache_source) if cache.mode != "off" else None
        self.encoder_plans = encoder_cache.plan(inputs.frozen, augment, inputs.frame_mixup)
        if self.encoder_plans and self.cache is None:
            log.info("data.cache=off: no encoder feature cache, the frozen encoders run on every batch")
            self.encoder_plans = {}
        self.output_dir = Path(output_dir) if output_dir else None
        # What test_dataloader serves: test (default), val, train, all clips, or the lockbox (split.lockbox's speakers)
        self.eval_split = eval_split
        self.assigned: Assignment | None = None
        self.datasets: dict[str, ClipDataset] = {}
        self.loaders: list[CrashTolerantLoader] = []
        self.left_out: list[dict] = []  # cached clips without a modality this run needs (a silent video, say)
        self.speaker_index: dict = {}  # training speaker -> its number (the batches' `speaker`)
        self.cached_features: dict[str, str] = {}  # modality -> a frozen encoder's feature cache folder
        self.encoder_reports: dict = {}
        self._prepared = False

    @classmethod
    def from_config(
        cls,
        data_cfg: DictConfig | dict,
        inputs: ModelInputs | None = None,
        corpus: Corpus | None = None,
        **overrides,
    ):
        """The DataModule a data config describes (conf/data/*.yaml, or the flat data config a 0.7 or 0.8 run stored),
        `overrides` replacing its keys; `corpus`: the one already built from the same config. Without `inputs`, the
        frames keep the preprocessing's size and the config's frame_mean / frame_std, if it has them."""
        data = (
            OmegaConf.to_container(data_cfg, resolve=True)
            if isinstance(data_cfg, DictConfig)
            else dict(data_cfg)
        )
        data = {**data, **overrides}
        if inputs is None:
            known = {"mean": "frame_mean", "std": "frame_std", "audio_input": "audio_input"}
            inputs = ModelInputs(
                **{
                    k: tuple(data[v]) if k != "audio_input" else data[v]
                    for k, v in known.items()
                    if data.get(v)
                }
            )
        augment = dict(data.get("augment") or {})
        return cls(
            corpus or Corpus.from_config(data),
            Preprocessing(**(data.get("preprocessing") or {})),
            inputs,
            _settings(LoaderSettings, data),
            _settings(CacheSettings, data, mode="cache", dir="cache_dir"),
            _settings(Normalisation, data),
            Augment(**{k: v for k, v in augment.items() if k != "enabled"})
            if augment.get("enabled")
            else None,
            data.get("eval_split", "test"),
            data.get("output_dir"),
        )

    # -- the corpus's facts, for the commands that read them through a DataModule -----------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return self.corpus.modalities

    @property
    def classes(self) -> tuple[str, ...]:
        return self.corpus.classes

    @property
    def root(self) -> str:
        return self.corpus.root

    @property
    def dataset(self) -> str:
        return self.corpus.dataset

    @property
    def cache_dir(self) -> str:
        return self.cache_settings.dir

    @property
    def decoder(self) -> str:
        return self.cache_settings.decoder

    @property
    def prepare_workers(self) -> int:
        return self.cache_settings.prepare_workers

    def catalog(self) -> pd.DataFrame:
        return self.corpus.catalog()

    @property
    def clips(self) -> pd.DataFrame:
        """Every clip set up, with its split (sets the data up)."""
        return self.assignment().clips

    def assignment(self) -> Assignment:
        """The clips this run reads, as the corpus's protocol assigned them (sets the data up)."""
        self.setup()
        return self.assigned

    @property
    def lockbox(self) -> list:
        return self.assignment().lockbox

    @property
    def protocol(self) -> dict:
        return self.assignment().protocol

    @property
    def split_by(self) -> str:
        return self.assignment().split_by

    def speakers(self) -> dict:
        return self.assignment().speakers()

    def actors(self, split: str) -> list:
        return self.assignment().actors(split)

    def tested_on(self, split: str = "test", actors_key: str = "test_actors") -> dict:
        return self.assignment().tested_on(split, actors_key)

    def speaker_speech(self, clips: pd.DataFrame | None = None) -> pd.DataFrame:
        """The clips whose speech the speaker statistics read (Corpus.speaker_speech), by default those set up."""
        return self.corpus.speaker_speech(self.clips if clips is None else clips)

    # -- on one process per node: fill the cache --------------------------------------
    def prepare_data(self) -> None:
        if self._prepared:  # once per DataModule, whoever asks first (Lightning, class_weights, a command)
            return
        clips = self.catalog()  # a generated corpus writes its missing clips first
        report = {"dataset": self.dataset, "root": self.corpus.source, "rejected": clips.attrs["rejected"]}
        settings = self.cache_settings
        if settings.mode == "auto":
            report.update(
                self.cache.build(
                    clips,
                    settings.decoder,
                    settings.prepare_workers,
                    decode_timeout_s=settings.decode_timeout_s,
                )
            )
        if self.cache is not None:
            report["left_out"] = self.cache.lacking(clips, self.modalities)
        if self.normalisation.functionals != "none":
            report["functionals_skipped"] = self.functional_features(self.corpus.speaker_speech(clips))[1]
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.output_dir / "prepare_report.json", report)
        self._prepared = True

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
            if self.cache_settings.mode == "require":
                missing = [c for c in clips["clip_id"] if not self.cache.has(c)]
                if missing:
                    raise FileNotFoundError(
                        f"data.cache=require but {len(missing)} clips are not in {self.cache.dir} (e.g. {missing[0]}); "
                        "run `python -m cremad_lit prepare` with the same data settings first"
                    )
        return clips

    # -- on every process --------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """The datasets of every split, the same whichever stage and whoever calls first."""
        if self.datasets:
            return
        self.prepare_data()  # once: whichever of Lightning, class_weights() or a command came first
        assigned = self.corpus.assign(self.usable(self.catalog()), self.eval_split)
        clips, functionals = self._with_functionals(assigned.clips)
        self.assigned = dataclasses.replace(assigned, clips=clips)
        if self.output_dir is not None and (self.trainer is None or self.trainer.is_global_zero):
            save_split(assigned.table, self.output_dir / "split.csv")
        speaker_stats = None
        if self.normalisation.speaker_norm != "none" and "audio" in self.modalities:
            reader = self._dataset(clips)
            speaker_stats = speaker_mel_stats(
                self.speaker_speech(clips), reader, self.normalisation.speaker_norm
            )
        training = sorted(clips.loc[clips["split"] == "train", "actor_id"].unique(), key=str)
        self.speaker_index = {actor: i for i, actor in enumerate(training)}
        if self.encoder_plans:
            everything = self._dataset(
                clips,
                speaker_stats=speaker_stats,
                functionals=functionals,
                audio_input=self.inputs.audio_input,
            )
            self.cached_features, self.encoder_reports = encoder_cache.fill(
                self.encoder_plans, self.cache.dir, everything, self.eval_batch_size, self.inputs.device
            )
        for name in ("train", "val", "test", "all"):
            self.datasets[name] = self._dataset(
                clips if name == "all" else clips[clips["split"] == name],
                augment=self.augment if name == "train" else None,
                speaker_stats=speaker_stats,
                functionals=functionals,
                audio_input=self.inputs.audio_input,
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
            " (the same speakers on several sides: a clip split)" if self.split_by == "clip" else "",
        )

    def _dataset(self, clips: pd.DataFrame, **more) -> ClipDataset:
        return ClipDataset(
            clips,
            self.prep,
            self.modalities,
            self.inputs.mean,
            self.inputs.std,
            classes=self.classes,
            cache=self.cache,
            decoder=self.decoder,
            **more,
        )

    def _with_functionals(self, clips: pd.DataFrame) -> tuple[pd.DataFrame, dict | None]:
        """The clips that have the run's functionals (the others left out, logged) and their features, normalised per
        speaker over each speaker's speech; (clips, None) without data.functionals."""
        kind = self.normalisation.functionals
        if kind == "none":
            return clips, None
        speech = self.speaker_speech(clips)
        features, skipped = self.functional_features(speech)
        skipped = [s for s in skipped if s["clip_id"] in set(clips["clip_id"])]
        if skipped:
            log.warning("leaving out %d clips without %s features: %s", len(skipped), kind, skipped[:3])
            clips = clips[clips["clip_id"].isin(features)]
        speech = speech[speech["clip_id"].isin(features)]
        speakers = dict(zip(speech["clip_id"], speech["actor_id"], strict=True))
        features = {c: features[c] for c in speech["clip_id"]}
        normalised = normalise_by_speaker(features, speakers, self.normalisation.speaker_norm)
        return clips, {c: normalised[c] for c in clips["clip_id"]}

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
        at = feature_dir(
            self.cache_dir, self.cache_source, self.prep.sample_rate, self.normalisation.functionals
        )
        settings = self.cache_settings
        return functionals_features(
            clips,
            at,
            self.prep,
            settings.prepare_workers,
            self.normalisation.functionals,
            settings.decode_timeout_s,
        )

    def clip_media(self, clip_id: str) -> dict:
        """What a person would look at for one clip (dataset.clip_media), from the cache where it is stored."""
        return media_of(self.clips, self.prep, self.modalities, self.decoder, self.cache)(clip_id)

    def training_speakers(self) -> int:
        """How many speakers the training split holds (sets the data up)."""
        self.setup("fit")
        return len(self.speaker_index)

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights of the training clips, mean 1, in the order of `classes` (sets the data up)."""
        self.setup("fit")
        counts = np.bincount(self.datasets["train"].labels, minlength=len(self.classes)).astype(np.float64)
        weights = counts.sum() / (len(self.classes) * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        sampler = None
        if shuffle and (weights := self.corpus.training_weights(self.datasets[split].clips)):
            # An epoch is as many draws as there are clips, with replacement: a small corpus's clips recur.
            sampler = WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)
        loader = CrashTolerantLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
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
