"""Models: timm backbones, temporal models, fusion heads and the audio-visual classifier (see net.py)."""

from cremad_lit.models.backbones import Backbone, backbone_input_spec
from cremad_lit.models.functionals import FunctionalsMLP
from cremad_lit.models.fusion import AttentionFusion, ConcatFusion, GatedFusion
from cremad_lit.models.net import AudioVisualNet
from cremad_lit.models.temporal import MeanTemporal, RecurrentTemporal, TransformerTemporal

__all__ = [
    "AttentionFusion",
    "AudioVisualNet",
    "Backbone",
    "ConcatFusion",
    "FunctionalsMLP",
    "GatedFusion",
    "MeanTemporal",
    "RecurrentTemporal",
    "TransformerTemporal",
    "backbone_input_spec",
]
