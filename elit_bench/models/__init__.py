"""Models: DiT, U-ViT, HDiT, multi-patch DiT and their ELIT versions, behind a timm-like registry."""

from elit_bench.models.backbones import DiT, HDiT, MultiPatchDiT, UViT, param_count
from elit_bench.models.elit import ELIT, LatentInterface, ReadLayer, WriteLayer
from elit_bench.models.loading import model_from_checkpoint
from elit_bench.models.registry import ModelName, create_model, list_models, register_model, resize_model

__all__ = [
    "DiT", "UViT", "HDiT", "MultiPatchDiT", "ELIT", "LatentInterface", "ReadLayer", "WriteLayer",
    "ModelName", "create_model", "list_models", "register_model", "resize_model", "param_count",
    "model_from_checkpoint",
]
