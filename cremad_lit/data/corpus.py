"""The Corpus: which clips exist, their classes and speakers, and how the protocol assigns them, without any loader.

    from cremad_lit.data.corpus import Corpus
    corpus = Corpus.from_config(cfg.data)      # any adapter: cremad | ravdess | manifest | synthetic | yours
    corpus.catalog()                           # every usable clip (names only); rejections in .attrs["rejected"]
    corpus.classes                             # the ordered class list: label i is classes[i]
    assigned = corpus.assign(corpus.catalog(), eval_split="test")   # split, lockbox and nested folds applied
    assigned.clips, assigned.actors("test"), assigned.tested_on("test")

eda, the classical models, the baseline, evaluate and predict read clips and speakers here; the DataModule
(datamodule.py) adds decoding, caches and loaders on top. Nothing here decodes a clip or knows a model.

A MixCorpus (data=mix) is several of them as one: each speaker and clip prefixed with its corpus (`ravdess/05`), a
`corpus` column in the clips table, each corpus assigned by its own protocol (its own lockbox); everything downstream
reads only the table, the classes and the Assignment, so it needs nothing else to train, evaluate or predict on a mix.

    corpus = Corpus.from_config(cfg.data)      # data=mix: a MixCorpus of data.corpora's entries
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from cremad_lit.data.catalog import build_catalog, unlabelled_speech
from cremad_lit.data.labels import EMOTIONS, resolve_classes
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
        if data.get("dataset") == "mix" and cls is Corpus:
            return MixCorpus.from_config(data)
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

    def training_weights(self, clips: pd.DataFrame) -> list[float] | None:
        """How often training should draw each of `clips` (the loader's sampler; the linear model's sample weights):
        None, every clip alike. A mix's data.sampling says otherwise (MixCorpus)."""
        return None

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


# What every corpus of a mix takes from data=mix itself unless its own entry says otherwise.
MIX_SHARED = ("modalities", "speaker_stats", "split")
MIX_CLASSES = ("shared", "union")
# A corpus's role in a mix: split like any corpus | only adds training speakers | only tests (train on the others,
# test on it: the cross-corpus protocol in one run).
ROLES = ("all", "train", "test")
SEPARATOR = "/"  # corpus/speaker, corpus/clip


class MixCorpus(Corpus):
    """Several corpora as one (data=mix, conf/data/mix.yaml): `corpora` maps a name to its Corpus. Speakers and clips
    are `name/...`; each corpus is split by its own protocol (its `split`, else the mix's), so splits stay
    speaker-disjoint inside every corpus and each may keep its own lockbox. Classes: default (the six), a list,
    `shared` (those every corpus has) or `union` (any corpus has; a corpus without one of them simply has no such
    clip)."""

    dataset = "mix"

    def __init__(
        self,
        corpora: dict[str, Corpus],
        classes="default",
        modalities=MODALITIES,
        speaker_stats="classes",
        roles: dict[str, str] | None = None,
        sampling="proportional",
    ):
        if len(corpora) < 1:
            raise ValueError("data=mix needs at least one entry in data.corpora")
        bad = [name for name in corpora if SEPARATOR in name or not name]
        if bad:
            raise ValueError(f"data.corpora names must be non-empty and without {SEPARATOR!r}: {bad}")
        self.corpora = dict(corpora)
        self.roles = {name: (roles or {}).get(name) or "all" for name in corpora}
        if set(self.roles.values()) - set(ROLES):
            raise ValueError(f"data.corpora.NAME.role must be one of {ROLES}, not {self.roles}")
        if all(role == "train" for role in self.roles.values()):
            raise ValueError("data=mix: every corpus has role=train, so none is left to validate or test on")
        if all(role == "test" for role in self.roles.values()):
            raise ValueError("data=mix: every corpus has role=test, so none is left to train on")
        self.modalities = tuple(modalities) if modalities is not None else None
        self.classes_setting = list(classes) if not isinstance(classes, str) else classes
        self.speaker_stats = speaker_stats
        sampling_exponent(sampling)  # a wrong data.sampling is one error before anything is read
        self.sampling = sampling
        self.split_config = {}  # each corpus has its own (Corpus.split_config)
        self.manifest, self.label_map, self.options, self.generate = None, None, {}, None
        self.root = None  # no one folder: `source` names them all
        self._catalog = self._unlabelled = None

    @classmethod
    def from_config(cls, data_cfg: DictConfig | dict, **overrides) -> MixCorpus:
        data = (
            OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else data_cfg
        )
        data = {**data, **overrides}
        classes = data.get("classes", "default")
        classes = list(classes) if isinstance(classes, list | ListConfig) else classes
        corpora, roles = {}, {}
        protocol = dict(data.get("split") or {})
        if protocol.get("lockbox") is not None or protocol.get("file"):
            raise ValueError(
                "data=mix: a lockbox or a split.file belongs to one corpus: data.corpora.NAME.split.lockbox=[...]"
            )
        for name, entry in (data.get("corpora") or {}).items():
            entry = {**{k: data[k] for k in MIX_SHARED if k in data}, **(entry or {})}
            roles[str(name)] = entry.pop("role", "all")
            entry["split"] = {
                **protocol,
                **{k: v for k, v in (entry.get("split") or {}).items() if v is not None},
            }
            # shared and union read every label a corpus has, then keep those the mix's setting names.
            entry.setdefault("classes", "all" if classes in MIX_CLASSES else classes)
            corpora[str(name)] = Corpus.from_config(entry)
        return cls(
            corpora,
            classes,
            modalities=data.get("modalities", MODALITIES),
            speaker_stats=data.get("speaker_stats", "classes"),
            roles=roles,
            sampling=data.get("sampling", "proportional"),
        )

    def training_weights(self, clips: pd.DataFrame) -> list[float] | None:
        weights = corpus_sampling_weights(clips, self.sampling)
        if weights is not None:
            shares = pd.Series(weights).groupby(clips["corpus"].to_numpy()).sum()
            draws = ", ".join(f"{corpus} {share:.0%}" for corpus, share in shares.items())
            log.info("data.sampling=%s: training draws %s", self.sampling, draws)
        return weights

    @property
    def source(self) -> str:
        return ", ".join(f"{name}={corpus.source}" for name, corpus in self.corpora.items())

    @property
    def scan_root(self) -> None:
        return None

    @property
    def cache_source(self) -> str:
        """One cache namespace for the mix's corpora (its entries are `name/clip`)."""
        keys = "|".join(f"{name}={corpus.cache_source}" for name, corpus in sorted(self.corpora.items()))
        return f"mix-{hashlib.sha1(keys.encode()).hexdigest()[:8]}"

    @property
    def classes(self) -> tuple[str, ...]:
        if self.classes_setting in (None, "default"):
            return EMOTIONS
        if self.classes_setting not in MIX_CLASSES:
            return resolve_classes([], self.classes_setting)
        each = [corpus.catalog().attrs["classes"] for corpus in self.corpora.values()]
        union = resolve_classes([c for classes in each for c in classes], "all")
        if self.classes_setting == "union":
            return union
        shared = tuple(c for c in union if all(c in classes for classes in each))
        if len(shared) < 2:
            raise ValueError(f"data.classes=shared: the corpora share fewer than two classes ({shared})")
        return shared

    @staticmethod
    def _namespaced(name: str, clips: pd.DataFrame) -> pd.DataFrame:
        """`clips` of corpus `name` with its speakers and clips prefixed, their own ids kept for its protocol."""
        clips = clips.assign(corpus=name, corpus_actor_id=clips["actor_id"], corpus_clip_id=clips["clip_id"])
        return clips.assign(
            actor_id=name + SEPARATOR + clips["actor_id"].astype(str),
            clip_id=name + SEPARATOR + clips["clip_id"].astype(str),
        )

    def catalog(self) -> pd.DataFrame:
        if self._catalog is None:
            parts = [self._namespaced(name, corpus.catalog()) for name, corpus in self.corpora.items()]
            rejected = [r for corpus in self.corpora.values() for r in corpus.catalog().attrs["rejected"]]
            table = pd.concat(parts, ignore_index=True)
            classes = self.classes
            for row in table[~table["emotion"].isin(classes)].itertuples():
                rejected.append(
                    {"path": row.audio_path or row.video_path, "reason": "not a class", "label": row.emotion}
                )
            table = table[table["emotion"].isin(classes)].sort_values("clip_id", ignore_index=True)
            table.attrs["rejected"], table.attrs["classes"] = rejected, classes
            self._catalog = table
        return self._catalog

    def unlabelled(self) -> pd.DataFrame:
        if self._unlabelled is None:
            parts = [self._namespaced(name, corpus.unlabelled()) for name, corpus in self.corpora.items()]
            self._unlabelled = pd.concat(parts, ignore_index=True)
        return self._unlabelled

    @staticmethod
    def _train_only(corpus: Corpus, clips: pd.DataFrame, eval_split: str) -> Assignment:
        """A corpus of role=train: every speaker trains (its lockbox still held out); none validates or tests, so a
        mix's test speakers are those of its other corpora, the same people a run on those corpora alone tests."""
        clips, lockbox = hold_out_lockbox(clips, corpus.split_config.get("lockbox"), eval_split)
        clips = clips.assign(split="train")
        table = (
            clips.groupby("actor_id", as_index=False).agg(gender=("gender", "first")).assign(split="train")
        )
        return Assignment(clips, table, {"protocol": "train_only"}, lockbox, corpus.dataset, "actor")

    @staticmethod
    def _test_only(corpus: Corpus, clips: pd.DataFrame, eval_split: str) -> Assignment:
        """A corpus of role=test: every speaker tests (its lockbox still held out); none trains or validates, so a
        model trained on the other corpora meets these people and this corpus for the first time at test."""
        clips, lockbox = hold_out_lockbox(clips, corpus.split_config.get("lockbox"), eval_split)
        clips = clips.assign(split="test")
        table = clips.groupby("actor_id", as_index=False).agg(gender=("gender", "first")).assign(split="test")
        return Assignment(clips, table, {"protocol": "test_only"}, lockbox, corpus.dataset, "actor")

    def assign(self, clips: pd.DataFrame, eval_split: str = "test") -> Assignment:
        """Each corpus's clips among `clips` assigned by its own protocol, then joined (namespaced again)."""
        joined, tables, protocols, lockbox = [], [], {}, []
        for name, corpus in self.corpora.items():
            own = clips[clips["corpus"] == name]
            if not len(own):
                continue
            if eval_split == "lockbox" and not corpus.split_config.get("lockbox"):
                continue  # nothing of this corpus is locked away
            native = own.assign(actor_id=own["corpus_actor_id"], clip_id=own["corpus_clip_id"])
            if self.roles[name] == "train" and eval_split in ("test", "val"):
                assigned = self._train_only(corpus, native, eval_split)
            elif self.roles[name] == "test" and eval_split != "lockbox":
                assigned = self._test_only(corpus, native, eval_split)
            else:
                assigned = corpus.assign(native, eval_split)
            mine = assigned.clips
            joined.append(
                mine.assign(
                    actor_id=name + SEPARATOR + mine["corpus_actor_id"].astype(str),
                    clip_id=name + SEPARATOR + mine["corpus_clip_id"].astype(str),
                )
            )
            table = assigned.table.copy()
            for column in ("actor_id", "clip_id"):
                if column in table:
                    table[column] = name + SEPARATOR + table[column].astype(str)
            tables.append(table.assign(corpus=name))
            protocols[name] = assigned.protocol
            lockbox += [name + SEPARATOR + str(speaker) for speaker in assigned.lockbox]
        if not joined:
            raise ValueError(
                "subset=lockbox, but no corpus of this mix holds a lockbox (data.corpora.NAME.split.lockbox)"
            )
        protocol = {"protocol": "per_corpus", "corpora": protocols}
        protocol["leaky"] = any(p.get("leaky") for p in protocols.values())
        nested = {name: p["nested"] for name, p in protocols.items() if p.get("nested")}
        if (
            nested
        ):  # an inner run of nested selection: the same fold numbers in every corpus, as select reads them
            left_out = [
                f"{n}{SEPARATOR}{a}" for n, record in nested.items() for a in record["outer_test_actors"]
            ]
            protocol["nested"] = {**next(iter(nested.values())), "outer_test_actors": left_out}
        for key in ("fold", "folds"):  # one fold number for the mix, as select and report read a run's
            found = {p[key] for p in protocols.values() if p.get(key) is not None}
            if len(found) == 1:
                protocol[key] = found.pop()
        by = "clip" if protocol["leaky"] else "actor"
        return Assignment(
            pd.concat(joined, ignore_index=True),
            pd.concat(tables, ignore_index=True),
            protocol,
            lockbox,
            "mix",
            by,
        )


def sampling_exponent(sampling="proportional") -> float:
    """data.sampling as the exponent 1 / T of temperature sampling: proportional 1, balanced 0, a temperature T > 0."""
    named = {"proportional": 1.0, "balanced": 0.0}
    if sampling in named:
        return named[sampling]
    try:
        temperature = float(sampling)
    except (TypeError, ValueError):
        temperature = 0.0
    if not temperature > 0:
        raise ValueError(
            f"data.sampling must be proportional, balanced or a temperature > 0, not {sampling!r}"
        )
    return 1.0 / temperature


def corpus_sampling_weights(clips: pd.DataFrame, sampling="proportional") -> list[float] | None:
    """Per-clip weights that draw each corpus of a mix with probability proportional to n_c ** (1 / T): `sampling`
    proportional (T = 1: every clip alike, as plain shuffling, so None), balanced (T = infinity: each corpus equally
    often) or a temperature T in between (the temperature sampling of multilingual training)."""
    exponent = sampling_exponent(sampling)
    if exponent == 1.0 or "corpus" not in clips or clips["corpus"].nunique() < 2:
        return None
    sizes = clips["corpus"].value_counts()
    share = sizes**exponent / (sizes**exponent).sum()  # each corpus's probability
    return clips["corpus"].map(share / sizes).tolist()


def check_data_root(data_cfg) -> None:
    """The corpus a data config names exists (a generated one is made on first use): one clear line otherwise."""
    from cremad_lit.data.adapters.cremad import EXPECTED_LAYOUT

    if data_cfg.get("dataset") == "mix":
        for name, entry in (data_cfg.get("corpora") or {}).items():
            unset = [
                k
                for k in ("root", "manifest")
                if isinstance(entry, DictConfig) and OmegaConf.is_missing(entry, k)
            ]
            if unset:
                raise MissingData(
                    f"data.corpora.{name}.{unset[0]} is not set: data.corpora.{name}.{unset[0]}=PATH"
                )
            try:
                check_data_root(entry)
            except MissingData as error:
                raise MissingData(f"data.corpora.{name}: {error}") from None
        return
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
