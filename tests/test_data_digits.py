"""The embedded digits and their zero-padded variant."""

import json

import numpy as np
import pytest
import torch

from elit_bench.cli import main
from elit_bench.data import build_dataset, describe_data, model_input_kwargs
from elit_bench.errors import UserError
from elit_bench.metrics.digits_classifier import load_digits_split, render_uint8


def test_digits_are_the_classifier_train_split_in_model_space():
    data = build_dataset(describe_data("digits", 16))
    x, y = data.load(np.arange(len(data)))
    split = load_digits_split()
    assert x.shape == (len(split["train_y"]), 1, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert sorted(set(y.tolist())) == list(range(10))
    # model space -> uint8 gives back exactly the real images the evaluation renders
    u8 = torch.round((x[:, 0] + 1) * 127.5).to(torch.uint8)
    assert torch.equal(u8, render_uint8(torch.from_numpy(split["train_x"]), 16))
    assert torch.equal(y, torch.from_numpy(split["train_y"]))


def test_padded_digits_put_content_in_the_crop():
    plain = build_dataset(describe_data("digits", 8))
    padded = build_dataset(describe_data("padded-digits", 8))
    assert padded.description["crop"] == [4, 4, 8, 8] and padded.description["resolution"] == 8
    idx = np.array([5, 0, 17])
    (x, y), (p, q) = plain.load(idx), padded.load(idx)
    assert p.shape == (3, 1, 16, 16) and torch.equal(y, q)
    assert torch.equal(p[..., 4:12, 4:12], x)  # 4x the tokens: 2x per side, content centred
    outside = p.clone()
    outside[..., 4:12, 4:12] = 0
    assert not outside.any()  # zeros (model space) on the padding
    mask = padded.loss_mask
    assert mask.shape == (1, 1, 16, 16) and mask.sum() == 64 and mask[..., 4:12, 4:12].all()
    assert model_input_kwargs(padded.description) == {"input_size": 16, "in_channels": 1, "num_classes": 10}


@pytest.mark.parametrize("spec, resolution, message", [
    ("digits", 2, "resolution"),
    ("digits", 16.5, "resolution"),
    ("nope", None, "does not exist"),
    ({"kind": "pixels"}, 8, "name"),
])
def test_bad_data_specs(spec, resolution, message):
    with pytest.raises(UserError, match=message):
        describe_data(spec, resolution)


def test_data_info_command(capsys):
    assert main(["data", "info", "padded-digits", "--resolution", "8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_input_shape"] == [1, 16, 16] and info["num_samples"] == 1347
