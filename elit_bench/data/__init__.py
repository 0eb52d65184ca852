"""Training data: the embedded digits, their zero-padded and moving variants, and latent data sets on disk.

A data set is named by a spec: `digits`, `padded-digits`, `moving-digits`
(clips of swaying digits, for the video models), or the path of a latent
data set directory (format in `elit_bench.data.latents`). Training stores
its data description in `config["data"]`; samplers read it to decode:

    {"name": "digits" | "padded-digits" | "moving-digits" | "<absolute path>",
     "kind": "pixels" | "latents",
     "resolution": image size in px of the real content (after cropping and decoding),
     "channels": model input channels,
     "num_classes": int (label `num_classes` is the null class),
     "frames": null, or T frames (the model's time axis) for video,
     "crop": null, or [top, left, height, width] on the model's input grid holding
             the real content (padded-digits: the model sees 2x the size per side),
     "autoencoder": null, or {"path", "scaling_factor", "shift_factor"}}

`describe_data(spec, resolution)` is cheap (validation before training);
`build_dataset(description)` loads the samples.
"""

from __future__ import annotations

from elit_bench.data.base import Dataset, PaddedDataset, pad_factor_crop
from elit_bench.data.digits import digits_dataset, digits_description
from elit_bench.data.latents import LatentDataset, latents_description, read_meta, spatial_size
from elit_bench.errors import UserError

EMBEDDED = ("digits", "padded-digits", "moving-digits")

__all__ = ["Dataset", "EMBEDDED", "build_dataset", "describe_data", "model_input_kwargs"]


def describe_data(spec, resolution: int | None = None) -> dict:
    """Data description for `spec` (a name, a path, or a description to re-resolve)."""
    if isinstance(spec, dict):
        if "name" not in spec:
            raise UserError("config 'data' must be a name (digits, padded-digits), a path, or a description with 'name'")
        resolution = resolution if resolution is not None else spec.get("resolution")
        spec = spec["name"]
    if not isinstance(spec, str) or not spec:
        raise UserError(f"data must be `digits`, `padded-digits`, `moving-digits` or a latent data set path, got {spec!r}")
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
    return {**kwargs, "in_channels": description["channels"], "num_classes": description["num_classes"]}
