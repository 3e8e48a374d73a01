"""The Corpus: which clips exist, their classes and speakers, and how the protocol assigns them, without any loader.

    from cremad_lit.data.corpus import Corpus
    corpus = Corpus.from_config(cfg.data)      # any adapter: cremad | ravdess | manifest | synthetic | yours
    corpus.catalog()                           # every usable clip (names only); rejections in .attrs["rejected"]
    corpus.classes                             # the ordered class list: label i is classes[i]
    assigned = corpus.assign(corpus.catalog(), eval_split="test")   # split, lockbox and nested folds applied
    assigned.clips, assigned.actors("test"), assigned.tested_on("test")

eda, the classical models, the baseline, evaluate and predict read clips and speakers here; the DataModule
(datamodule.py) adds decoding, caches and loaders on top. Nothing here decodes a clip or knows a model.

A Corpus is one source today. It is the unit a multi-corpus release composes (issue 41): several of them become one
by prefixing each speaker with its corpus (`ravdess/05`), adding a corpus column to the clips table and assigning
each corpus by its own protocol; everything downstream reads only the table, the classes and the Assignment.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from cremad_lit.data.catalog import build_catalog, unlabelled_speech
from cremad_lit.data.labels import resolve_classes
from cremad_lit.data.splits import (
    LEAKY_WARNING,
    choose_split,
    hold_out_lockbox,
    hold_out_outer_test,
    split_key,
)
from cremad_lit.errors import MissingData

log = logging.getLogger(__name__)
MODALITIES = ("audio", "video")
# Whose speech the speaker statistics read: all_speech (also the clips left out for their label) or classes
# (only the clips of the kept classes: what a model trained before 0.8 was, and the default for its config).
SPEAKER_STATS = ("classes", "all_speech")


@dataclasses.dataclass
class Assignment:
    """The corpus's clips as the protocol assigned them: `clips` with a `split` column (train | val | test), the
    split table split.csv holds, how it was made (`protocol`, for metrics.json) and the lockbox's speakers."""

    clips: pd.DataFrame
    table: pd.DataFrame
    protocol: dict
    lockbox: list
    dataset: str
    by: str

    @property
    def split_by(self) -> str:
        """actor, or clip for a split where speakers are on both sides (split.by=clip, leaky clip lists)."""
        return "clip" if self.protocol.get("leaky") else self.by

    def actors(self, split: str) -> list:
        """The actors (speakers) whose clips are in `split` (`all`: every one; `lockbox`: the lockbox, when opened)."""
        clips = self.clips if split in ("all", "lockbox") else self.clips[self.clips["split"] == split]
        return sorted(a.item() if hasattr(a, "item") else a for a in clips["actor_id"].unique())

    def speakers(self) -> dict:
        """clip_id -> speaker (actor) of every clip assigned."""
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


class Corpus:
    """One source of clips: its adapter (`dataset`), where its files are (`root`, or a `manifest` whose rows say
    where), how its labels map (`label_map`, `classes`), which modalities a clip must have, and its protocol
    (`split`: conf/split/default.yaml)."""

    def __init__(
        self,
        dataset: str = "cremad",
        root: str | None = None,
        manifest: str | None = None,
        label_map: dict | None = None,
        options: dict | None = None,
        modalities=MODALITIES,
        classes="default",
        split: dict | None = None,
        speaker_stats: str = "classes",
        generate: dict | None = None,
    ):
        modalities = (
            tuple(modalities) if modalities is not None else None
        )  # None: every clip, whatever it has (eda)
        if modalities is not None and (not modalities or set(modalities) - set(MODALITIES)):
            raise ValueError(
                f"data.modalities must be a non-empty subset of {list(MODALITIES)}, not {list(modalities)}"
            )
        if speaker_stats not in SPEAKER_STATS:
            raise ValueError(f"data.speaker_stats must be one of {SPEAKER_STATS}, not {speaker_stats!r}")
        if root is None and not manifest:
            raise ValueError("data.root is not set (data.manifest=PATH.csv for data=manifest)")
        self.dataset, self.manifest, self.modalities = dataset, manifest, modalities
        # A manifest's clips live where its paths say; its folder stands for the root in reports.
        self.root = str(Path(manifest).expanduser().parent if root is None else root)
        self.label_map = dict(label_map) if label_map else label_map
        self.options = dict(options or {})
        self.classes_setting = list(classes) if not isinstance(classes, str) else classes
        self.split_config = dict(split or {})
        self.speaker_stats = speaker_stats
        self.generate = (
            generate  # the built-in generated corpus (data=synthetic): its settings, made on first use
        )
        self._catalog: pd.DataFrame | None = None
        self._unlabelled: pd.DataFrame | None = None

    @classmethod
    def from_config(cls, data_cfg: DictConfig | dict, **overrides) -> Corpus:
        """The corpus a data config names (conf/data/*.yaml; the keys a stored 0.7 or 0.8 run config has too)."""
        data = (
            OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else data_cfg
        )
        data = {**data, **overrides}
        classes = data.get("classes", "default")
        return cls(
            dataset=data.get("dataset", "cremad"),
            root=data.get("root"),
            manifest=data.get("manifest") or None,
            label_map=data.get("label_map"),
            options=data.get("options"),
            modalities=data.get("modalities", MODALITIES),
            classes=list(classes) if isinstance(classes, list | ListConfig) else classes,
            split=data.get("split"),
            speaker_stats=data.get("speaker_stats", "classes"),
            generate=data.get("generate"),
        )

    @property
    def scan_root(self) -> str | None:
        """The folder the adapter scans (None for a manifest, whose rows say where each clip is)."""
        return self.root if self.manifest is None else None

    @property
    def source(self) -> str | None:
        """What the user gave: the manifest, else the root."""
        return self.manifest or self.root

    @property
    def cache_source(self) -> str:
        """The key of this corpus's clips in every cache (clip cache, functionals, expressions)."""
        from cremad_lit.data.cache import source_key

        return source_key(self.dataset, self.source)

    def catalog(self) -> pd.DataFrame:
        """Every usable clip of the corpus for these modalities (read once); rejections in `.attrs["rejected"]`. A
        generated corpus first writes whatever clips it lacks."""
        if self._catalog is None:
            if self.generate:
                from cremad_lit.data.synthetic import generate

                generate(self.root, **self.generate)
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
                self.scan_root, self.dataset, self.manifest, self.options, self.catalog().attrs["rejected"]
            )
        return self._unlabelled

    @property
    def classes(self) -> tuple[str, ...]:
        """The ordered class list, resolved once: label i is classes[i]. data.classes=default is the six whatever the
        corpus holds (nothing to read: a generated corpus may not exist yet); any other setting reads the corpus's
        labels."""
        if self.classes_setting in (None, "default"):
            return resolve_classes([], "default")
        return tuple(self.catalog().attrs["classes"])

    def speaker_speech(self, clips: pd.DataFrame) -> pd.DataFrame:
        """The clips whose speech the speaker statistics read: `clips` and, with data.speaker_stats=all_speech, every
        other clip of the same speakers that was left out only for its label (split "unlabelled"). A person's
        statistics then do not depend on which of their clips carry a kept label."""
        if self.speaker_stats == "classes":
            return clips
        other = self.unlabelled()
        other = other[other["actor_id"].isin(set(clips["actor_id"]))]
        if not len(other):
            return clips
        return pd.concat([clips, other.assign(split="unlabelled")], ignore_index=True)

    @property
    def split_by(self) -> str:
        return str(self.split_config.get("by", "actor"))

    def assign(self, clips: pd.DataFrame, eval_split: str = "test") -> Assignment:
        """`clips` (the catalog, or the part of it a loader can read) assigned by the protocol: the lockbox held out
        (or, with eval_split=lockbox, alone), the outer test fold of nested selection held out, then the split."""
        clips, lockbox = hold_out_lockbox(clips, self.split_config.get("lockbox"), eval_split)
        clips, split_config, nested = hold_out_outer_test(clips, self.split_config, self.split_by)
        table, protocol = choose_split(clips, split_config, self.split_by, eval_split, lockbox)
        if nested:
            protocol["nested"] = nested
        key = split_key(table)
        if key == "clip_id" and protocol["protocol"] != "lists":
            log.warning(LEAKY_WARNING)
        clips = clips.merge(table[[key, "split"]], on=key, how="left")
        return Assignment(clips, table, protocol, lockbox, self.dataset, self.split_by)


def check_data_root(data_cfg) -> None:
    """The corpus a data config names exists (a generated one is made on first use): one clear line otherwise."""
    from cremad_lit.data.adapters.cremad import EXPECTED_LAYOUT

    if data_cfg.get("generate"):
        return
    if data_cfg.get("dataset", "cremad") == "manifest":
        if not data_cfg.get("manifest") or not Path(str(data_cfg.manifest)).expanduser().is_file():
            raise MissingData(
                f"no manifest at data.manifest={data_cfg.get('manifest')} (a CSV: see conf/data/manifest.yaml)"
            )
        return
    root = Path(str(data_cfg.root))
    if not root.is_dir():
        layout = (
            EXPECTED_LAYOUT if data_cfg.get("dataset", "cremad") == "cremad" else f"a {data_cfg.dataset} root"
        )
        raise MissingData(f"no dataset at data.root={root}: {layout}")
