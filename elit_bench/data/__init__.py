"""Training data: the embedded digits, their zero-padded, moving and compositional variants, and latent data sets.

A data set is named by a spec: `digits`, `padded-digits`, `moving-digits`
(clips of swaying digits, for the video models), `digits-t2i` (prompts over
digits on larger canvases, for text-to-image models: `data.compositional`), or
the path of a latent data set directory (format in `elit_bench.data.latents`). Training stores
its data description in `config["data"]`; samplers read it to decode:

    {"name": "digits" | "padded-digits" | "moving-digits" | "<absolute path>",
     "kind": "pixels" | "latents",
     "resolution": image size in px of the real content (after cropping and decoding),
     "channels": model input channels,
     "num_classes": int (label `num_classes` is the null class),
     "frames": null, or T frames (the model's time axis) for video,
     "crop": null, or [top, left, height, width] on the model's input grid holding
             the real content (padded-digits: the model sees 2x the size per side),
     "autoencoder": null, or {"path", "scaling_factor", "shift_factor"},
     "text": absent for class labels; else labels are prompt ids (num_classes prompts, id num_classes the
             empty one) and "text" names their table: "tiny" (the embedded prompts through the built-in
             encoder) or an `elit-bench encode-text` directory (`prompt_table`)}

`describe_data(spec, resolution)` is cheap (validation before training);
`build_dataset(description)` loads the samples.
"""

from __future__ import annotations

from elit_bench.data import compositional
from elit_bench.data.base import Dataset, PaddedDataset, pad_factor_crop
from elit_bench.data.digits import digits_dataset, digits_description
from elit_bench.data.latents import LatentDataset, latents_description, read_meta, spatial_size
from elit_bench.errors import UserError

EMBEDDED = ("digits", "padded-digits", "moving-digits", compositional.NAME)

__all__ = ["Dataset", "EMBEDDED", "build_dataset", "describe_data", "model_input_kwargs", "prompt_table"]


def describe_data(spec, resolution: int | None = None) -> dict:
    """Data description for `spec` (a name, a path, or a description to re-resolve)."""
    if isinstance(spec, dict):
        if "name" not in spec:
            raise UserError("config 'data' must be a name (digits, padded-digits), a path, or a description with 'name'")
        resolution = resolution if resolution is not None else spec.get("resolution")
        spec = spec["name"]
    if not isinstance(spec, str) or not spec:
        raise UserError(f"data must be `digits`, `padded-digits`, `moving-digits` or a latent data set path, got {spec!r}")
    if spec == compositional.NAME:
        return compositional.compositional_description(compositional.CANVAS if resolution is None else resolution)
    if spec in EMBEDDED:
        description = digits_description(resolution, video=spec == "moving-digits")
        if spec == "padded-digits":
            _, crop = pad_factor_crop((resolution, resolution))
            description = {**description, "name": spec, "crop": crop}
        return description
    description = latents_description(spec)
    if resolution is not None and resolution != description["resolution"]:
        raise UserError(f"--resolution {resolution} does not match the latent data set at {spec!r}, which was "
                        f"encoded at {description['resolution']} px; drop --resolution or re-encode")
    return description


def build_dataset(description: dict) -> Dataset:
    """The data set a description (`config["data"]`) names."""
    name = description["name"]
    if name in ("digits", "moving-digits"):
        return digits_dataset(description["resolution"], video=name == "moving-digits")
    if name == compositional.NAME:
        return compositional.compositional_dataset(description["resolution"])
    if name == "padded-digits":
        return PaddedDataset(digits_dataset(description["resolution"]), name)
    return LatentDataset(name)


def model_input_kwargs(description: dict) -> dict:
    """`create_model` overrides that make a model fit the data: input_size, in_channels, num_classes[, frames]."""
    if description["kind"] == "pixels":
        size = description["resolution"]
        if description.get("crop") is not None:  # padded: the grid is larger than the content
            size = pad_factor_crop((size, size))[0][0]
        kwargs = {"input_size": size, **({"frames": description["frames"]} if description.get("frames") else {})}
    else:
        meta = read_meta(description["name"])
        kwargs = {"input_size": spatial_size(meta["latent_shape"])}
        if meta.get("frames") is not None:
            kwargs["frames"] = meta["frames"]
    kwargs = {**kwargs, "in_channels": description["channels"], "num_classes": description["num_classes"]}
    if description.get("text") is not None:  # a text-to-image model: its prompt table's shape
        table = prompt_table(description)
        kwargs.update(text_tokens=table.tokens.shape[1], text_dim=table.tokens.shape[2])
    return kwargs


def prompt_table(description: dict):
    """The prompts a text-conditioned data set's labels index (`data.text.EncodedPrompts`), None for class labels."""
    from elit_bench.data.text import TINY, encode_prompts, load_prompts

    text = description.get("text")
    if text is None:
        return None
    if text == TINY:
        return encode_prompts([p.text for p in compositional.PROMPTS], TINY)
    return load_prompts(text)
