"""cremad-lit: audio-visual emotion recognition on CREMA-D with PyTorch Lightning and Hydra.

Run `make demo` for a complete example on generated data; see README.md.
"""

__version__ = "0.7.0"
