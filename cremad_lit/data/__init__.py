"""Data: catalog -> splits -> decoding and features -> prepared cache -> Dataset/DataModule; plus the synthetic generator.

python -m cremad_lit.data.catalog /path/to/CREMA-D        # what the catalog finds
python -m cremad_lit.data.synthetic --out DIR             # a CREMA-D-format dataset with real media
"""
