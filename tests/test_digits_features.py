"""The digits feature space is sound: every dimension alive on real digits, full-rank covariance, no warnings;
the real-data floor is scored like a sample set."""

import warnings

import numpy as np
import pytest
import torch

from elit_bench.data.digits import digits_uint8
from elit_bench.errors import UserError
from elit_bench.metrics import ArraySamples, compute_metrics, extract_features, get_extractor
from elit_bench.metrics.compute import METRICS
from elit_bench.metrics.digits_classifier import FEATURE_DIM, load_digits_classifier, to_model_input
from elit_bench.suites.floor import real_digits


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_real_digits_features_have_full_rank(split):
    images, _ = digits_uint8(16, split)
    with torch.no_grad():
        features = load_digits_classifier()(to_model_input(images))[0].double().numpy()
    assert features.shape[1] == FEATURE_DIM
    assert (features.var(axis=0) > 0).all()  # no unit constant on real digits (post-ReLU, 24 of 64 were)
    eigenvalues = np.linalg.eigvalsh(np.cov(features, rowvar=False))
    assert np.linalg.matrix_rank(np.cov(features, rowvar=False)) == FEATURE_DIM
    assert eigenvalues.min() > 1e-6 * eigenvalues.max()  # well away from singular, not just full rank by round-off


def test_digits_fd_reads_the_features_checked_above():
    spec = METRICS["digits_fd"]
    images, _ = digits_uint8(16, "heldout")
    rgb = np.repeat(images.numpy()[:32, ..., None], 3, axis=-1)
    feats = extract_features(get_extractor(spec.extractor), ArraySamples(rgb), (spec.feature,))[spec.feature]
    with torch.no_grad():
        direct = load_digits_classifier()(to_model_input(images[:32]))[0].double().numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num", [64, 512])
def test_real_data_floor_scores_without_warnings(num):
    heldout, _ = digits_uint8(16, "heldout")
    reference = np.repeat(heldout.numpy()[..., None], 3, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "Matrix is singular" among them
        result = compute_metrics(real_digits(16, num), reference, "digits_fd,digits_acc", use_cache=False)
    fd, acc = result["intervals"]["digits_fd_debiased"], result["intervals"]["digits_acc"]
    assert fd["method"] == "bootstrap-both-sides" and fd["low"] <= result["digits_fd_debiased"] <= fd["high"]
    assert acc["method"] == "wilson" and acc["low"] <= result["digits_acc"] <= acc["high"]
    assert result["digits_acc"] >= 0.97
    assert result["provenance"]["fake"]["num_samples"] == num


def test_real_digits_are_a_fixed_subset_of_the_train_split():
    a, b = real_digits(16, 100), real_digits(16, 100)
    assert np.array_equal(a.array, b.array) and np.array_equal(a.labels, b.labels)
    assert a.array.shape == (100, 16, 16, 3) and a.array.dtype == np.uint8
    train, _ = digits_uint8(16, "train")
    rows = {im.tobytes() for im in train.numpy()}
    assert all(im[..., 0].tobytes() in rows for im in a.array)
    clips = real_digits(16, 10, data="moving-digits")
    assert clips.array.shape[:2] == (10, 8)
    with pytest.raises(UserError, match="train split has"):
        real_digits(16, len(train) + 1)
