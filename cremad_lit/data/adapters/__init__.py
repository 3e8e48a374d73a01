"""Dataset adapters, one per corpus: each turns a dataset root (or a manifest) into the same clips table.

    build_catalog(root, dataset="cremad" | "ravdess" | "manifest")     # see cremad_lit/data/catalog.py

An adapter is `scan(root, manifest, label_map, **options) -> (rows, rejected)`: rows are dicts with the catalog's
COLUMNS, rejected are {path, reason, label} for what it left out.
"""

from cremad_lit.data.adapters import cremad, manifest, ravdess

ADAPTERS = {"cremad": cremad.scan, "ravdess": ravdess.scan, "manifest": manifest.scan}
