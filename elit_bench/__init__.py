"""elit_bench: benchmark and evaluation harness for elastic diffusion transformers."""

__version__ = "0.1.0"
