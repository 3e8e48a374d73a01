"""Data: adapters (one per corpus) -> catalog -> splits -> decoding and features -> prepared cache -> DataModule;
plus the synthetic generator.

python -m cremad_lit.data.catalog /path/to/CREMA-D        # what the catalog finds
python -m cremad_lit.data.catalog ../shared/ravdess-speech ravdess
python -m cremad_lit.data.synthetic --out DIR             # a CREMA-D-format dataset with real media
"""
