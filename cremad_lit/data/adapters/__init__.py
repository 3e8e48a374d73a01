"""Dataset adapters, one per corpus: each turns a dataset root (or a manifest) into the same clips table.

    build_catalog(root, dataset="cremad" | "ravdess" | "manifest")     # see cremad_lit/data/catalog.py
    python train.py data.dataset=mypkg.corpora.emodb data.root=DIR    # your own: a module with a `scan` (docs/extending.md)

An adapter is `scan(root, manifest, label_map, keep_unknown, **options) -> (rows, rejected)`: rows are dicts with the
catalog's COLUMNS, rejected are {path, reason, label} for what it left out.
"""

import importlib

from cremad_lit.data.adapters import cremad, manifest, ravdess

ADAPTERS = {"cremad": cremad.scan, "ravdess": ravdess.scan, "manifest": manifest.scan}


def adapter(dataset: str):
    """The `scan` of a built-in adapter, or of the module a dotted name imports (`mypkg.corpora.emodb`)."""
    if dataset in ADAPTERS:
        return ADAPTERS[dataset]
    if "." in dataset:
        try:
            scan = getattr(importlib.import_module(dataset), "scan", None)
        except ImportError as error:
            raise ValueError(
                f"data.dataset={dataset}: cannot import that adapter module ({error})"
            ) from error
        if callable(scan):
            return scan
        raise ValueError(
            f"data.dataset={dataset}: that module has no scan(root, manifest, label_map, ...) function"
        )
    raise ValueError(
        f"data.dataset must be one of {sorted(ADAPTERS)} or an adapter module's dotted name, not {dataset!r}"
    )
