"""Sample sets from checkpoints: seeded generation (`generate`), decoding to images (`decode`), `elit-bench sample` (`cli`)."""

from elit_bench.sampling.decode import Decoder, to_uint8
from elit_bench.sampling.generate import Recipe, generate, parse_seeds, prepare, sample_seeds, seed_list

__all__ = ["Decoder", "to_uint8", "Recipe", "generate", "parse_seeds", "prepare", "sample_seeds", "seed_list"]
