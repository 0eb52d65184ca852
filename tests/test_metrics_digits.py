"""The shipped digits classifier: held-out accuracy and its input protocol."""

import numpy as np
import pytest
import torch

from elit_bench.data.digits import load_digits_split, render_uint8
from elit_bench.errors import UserError
from elit_bench.metrics import ArraySamples, compute_metrics
from elit_bench.metrics.digits_classifier import (
    DEFAULT_WEIGHTS,
    heldout_accuracy,
    load_digits_classifier,
    predict,
)


def test_shipped_weights_are_small():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 1_000_000


@pytest.mark.parametrize("size, mode", [(8, "nearest"), (16, "nearest"), (16, "bilinear"), (32, "bilinear"), (32, "bicubic")])
def test_heldout_accuracy_from_shipped_weights(size, mode):
    assert heldout_accuracy(load_digits_classifier(), size, mode) >= 0.97


def test_input_layouts_agree():
    model = load_digits_classifier()
    gray = render_uint8(torch.from_numpy(load_digits_split()["heldout_x"][:64]), 32)  # (N, H, W)
    rgb_last = gray[..., None].expand(-1, -1, -1, 3)  # (N, H, W, 3)
    expected = predict(model, gray)
    for images in (gray[:, None], rgb_last, rgb_last.permute(0, 3, 1, 2)):
        assert torch.equal(predict(model, images), expected)
    with pytest.raises(UserError, match="uint8"):
        predict(model, gray.float())


def test_digits_metrics_separate_real_digits_from_noise():
    split = load_digits_split()
    real = render_uint8(torch.from_numpy(split["train_x"][:300]), 16).numpy()
    good = render_uint8(torch.from_numpy(split["heldout_x"][:300]), 16).numpy()
    noise = np.random.default_rng(0).integers(0, 256, good.shape, dtype=np.uint8)
    good_res = compute_metrics(ArraySamples(good, split["heldout_y"][:300]), real, "digits_fd,digits_acc", use_cache=False)
    noise_res = compute_metrics(ArraySamples(noise, split["heldout_y"][:300]), real, "digits_fd,digits_acc", use_cache=False)
    assert good_res["digits_acc"] >= 0.97 and noise_res["digits_acc"] < 0.5
    assert noise_res["digits_fd"] > 10 * good_res["digits_fd"]
