"""Decoding model outputs to uint8 images: the pixel mapping, crops, grayscale and video layouts, and
latents through a local AutoencoderKL."""

import numpy as np
import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.sampling.decode import Decoder, to_uint8

PIXELS = {"name": "digits", "kind": "pixels", "resolution": 8, "channels": 1, "num_classes": 10, "frames": None,
          "crop": None, "autoencoder": None}


def test_pixels_map_minus_one_to_one_onto_0_to_255():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]).view(1, 1, 1, 6)
    out = to_uint8(x)
    assert out.shape == (1, 1, 6, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]  # round((x + 1) * 127.5), clamped
    assert (out[..., 0] == out[..., 2]).all()


def test_rgb_and_video_layouts():
    rgb = torch.rand(2, 3, 4, 5) * 2 - 1
    assert to_uint8(rgb).shape == (2, 4, 5, 3)
    video = torch.rand(2, 1, 3, 4, 5) * 2 - 1
    assert to_uint8(video).shape == (2, 3, 4, 5, 3)
    with pytest.raises(UserError):
        to_uint8(torch.zeros(1, 4, 2, 2))


def test_padded_data_is_cropped_to_its_content():
    decoder = Decoder({**PIXELS, "crop": [2, 1, 4, 3]})
    x = torch.full((1, 1, 8, 8), -1.0)
    x[..., 2:6, 1:4] = 1.0
    out = decoder(x)
    assert out.shape == (1, 4, 3, 3) and (out == 255).all()


@pytest.fixture
def tiny_vae(tmp_path):
    """(a tiny random diffusers AutoencoderKL, its harness spec: a local folder, scaling 0.5, shift 0.1)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=8).eval()
    vae.save_pretrained(tmp_path / "vae")
    return vae, {"path": str(tmp_path / "vae"), "scaling_factor": 0.5, "shift_factor": 0.1}


def test_latents_are_unnormalised_and_decoded_by_the_local_autoencoder(tiny_vae):
    vae, spec = tiny_vae
    decoder = Decoder({**PIXELS, "kind": "latents", "channels": 4, "autoencoder": spec})
    z = torch.randn(2, 4, 4, 4)
    out = decoder(z)
    with torch.no_grad():
        expected = to_uint8(vae.decode(z / 0.5 + 0.1).sample)
    assert out.shape == (2, 8, 8, 3) and np.array_equal(out, expected)


@pytest.mark.parametrize("data", [
    None,
    {**PIXELS, "kind": "voxels"},
    {**PIXELS, "crop": [0, 0, 4]},
    {**PIXELS, "kind": "latents"},  # no autoencoder named
    {**PIXELS, "kind": "latents", "autoencoder": {"path": "/nonexistent/vae", "scaling_factor": 1.0}},
    {**PIXELS, "kind": "latents", "frames": 4, "autoencoder": {"path": "/tmp", "scaling_factor": 1.0}},
])
def test_bad_data_descriptions_are_user_errors(data):
    with pytest.raises(UserError):
        Decoder(data)


def test_latents_decode_in_chunks_with_the_same_output(tiny_vae, monkeypatch):
    # a bounded decode batch: 5 samples through chunks of 2 give the output of one pass (fp32 on the CPU)
    _, spec = tiny_vae
    data = {**PIXELS, "kind": "latents", "channels": 4, "autoencoder": spec}
    z = torch.randn(5, 4, 4, 4)
    whole = Decoder(data, decode_batch=8)(z)
    chunked = Decoder(data, decode_batch=2)
    sizes = []
    real_decode = chunked.autoencoder.decode
    monkeypatch.setattr(chunked.autoencoder, "decode", lambda latents: sizes.append(len(latents)) or real_decode(latents))
    assert np.array_equal(chunked(z), whole) and sizes == [2, 2, 1]
