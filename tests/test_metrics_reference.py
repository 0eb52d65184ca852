"""Agreement with the reference implementations: clean-fid, pytorch-fid, torch-fidelity."""

import contextlib
import io

import numpy as np
import pytest
import torch
import torch_fidelity
from cleanfid.fid import frechet_distance as cleanfid_frechet
from pytorch_fid.fid_score import calculate_frechet_distance as pytorch_fid_frechet
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from elit_bench.errors import UserError
from elit_bench.metrics import FeatureStats, compute_metrics, frechet_distance, get_extractor
from elit_bench.metrics.inception_score import inception_score
from elit_bench.metrics.prdc import kernel_inception_distance, precision_recall
from elit_bench.metrics.synthetic import random_images, write_png_folder
from synthetic import random_inception_weights

NUM_IMAGES = 20  # generated: two samples in each of the 10 IS splits (one would force IS = 1)
NUM_REAL = 10  # enough for 3-NN balls and KID subsets


def gaussian_features(n, d, seed, shift):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ mix + shift


@pytest.mark.parametrize("n", [500, 40], ids=["well-conditioned", "singular"])  # singular: N < D
def test_frechet_distance_matches_cleanfid_and_pytorch_fid(n):
    a = FeatureStats.from_features(gaussian_features(n, 64, 0, 0.0))
    b = FeatureStats.from_features(gaussian_features(n, 64, 1, 0.3))
    ours = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    with contextlib.redirect_stdout(io.StringIO()):  # both print a notice on singular products
        theirs = [cleanfid_frechet(a.mu, a.sigma, b.mu, b.sigma), pytorch_fid_frechet(a.mu, a.sigma, b.mu, b.sigma)]
    assert ours > 1.0
    for value in theirs:
        assert ours == pytest.approx(float(value), rel=1e-6)


def test_frechet_distance_is_zero_for_equal_statistics_and_rejects_mismatched_dims():
    a = FeatureStats.from_features(gaussian_features(200, 16, 0, 0.0))
    assert abs(frechet_distance(a.mu, a.sigma, a.mu, a.sigma)) < 1e-6
    b = FeatureStats.from_features(gaussian_features(200, 8, 0, 0.0))
    with pytest.raises(UserError, match="feature dimensions do not match"):
        frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


# ---------------------------------------------------------------- IS, precision/recall, KID from their definitions
# Ours call torch-fidelity's metric functions on our features, so agreeing with torch-fidelity's pipeline says
# nothing about the metric math. These tests hold the math to the papers' definitions, written out here.
def inception_score_by_definition(logits, splits=10, seed=2020):
    """Salimans et al.: exp(E_x KL(p(y|x) || p(y))) per split, mean and (population) std over splits; samples
    shuffled by np.random.RandomState(seed).permutation first (the protocol's fixed shuffle, docs/conventions.md#metrics)."""
    logits = np.asarray(logits, dtype=np.float64)[np.random.RandomState(seed).permutation(len(logits))]
    n = len(logits)
    scores = []
    for i in range(splits):
        part = logits[i * n // splits:(i + 1) * n // splits]
        log_p = part - logsumexp(part, axis=1, keepdims=True)
        p = np.exp(log_p)
        log_marginal = np.log(p.mean(axis=0))
        scores.append(np.exp((p * (log_p - log_marginal)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall_by_definition(fake, real, k=3):
    """Kynkaanniemi et al.: a sample lies on a manifold if it is within the k-NN radius of one of its points."""
    radius = lambda x: np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the point itself
    precision = (cdist(fake, real) <= radius(real)[None]).any(axis=1).mean()
    recall = (cdist(real, fake) <= radius(fake)[None]).any(axis=1).mean()
    return float(precision), float(recall)


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3 (Binkowski et al.)."""
    kernel = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3
    m = len(x)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    return ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


def test_inception_score_exact_cases_and_definition():
    # catches: KL taken the wrong way round, no exp, marginal over all samples instead of the split, log base
    # 30 confident samples (other classes at e^-30 of the top one) of 30 distinct classes: each split of 3 samples
    # scores 3 (all its mass on 3 classes, evenly), up to terms of order 40 * 30 e^-30 = 1e-10
    onehot = 30 * np.eye(40)[:30]
    assert inception_score(onehot) == pytest.approx((3.0, 0.0), abs=1e-9)
    assert inception_score(30 * np.eye(40)[[7] * 30]) == pytest.approx((1.0, 0.0), abs=1e-9)  # one class: 1
    logits = np.random.default_rng(0).standard_normal((57, 20)) * 3  # 57: splits of 5 and 6 samples
    assert inception_score(logits) == pytest.approx(inception_score_by_definition(logits), rel=1e-9)


def test_precision_recall_exact_case_and_definition():
    # catches: radius taken as the k-th neighbour counting the point itself, precision and recall swapped,
    # strict instead of inclusive balls
    real = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])  # 3-NN radii 3, 2, 2, 2, 3: real balls cover [-3, 7]
    fake = np.array([[-5.0], [0.5], [6.0], [8.0]])  # 0.5 and 6 inside; fake radii 13, 7.5, 11, 13 cover the reals
    assert precision_recall(fake, real) == pytest.approx((0.5, 1.0))
    rng = np.random.default_rng(1)
    fake, real = rng.standard_normal((40, 6)), rng.standard_normal((50, 6)) + 0.7
    ours = precision_recall(fake, real)
    assert ours == pytest.approx(precision_recall_by_definition(fake, real), abs=1e-6)  # fractions in float32
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1


def test_kid_exact_case_and_definition():
    # catches: a biased estimator (diagonal kept), a wrong kernel degree or scale, a sign error on the cross term
    fake, real = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    # k(0,1) = 1, k(1,2) = 27, cross terms 1 + 1 + 8 + 27 = 37: MMD^2 = 2/2 + 54/2 - 2 * 37 / 4 = 9.5
    assert kernel_inception_distance(fake, real) == pytest.approx((9.5, 0.0), abs=1e-9)
    rng = np.random.default_rng(2)
    fake, real = rng.standard_normal((30, 8)), rng.standard_normal((30, 8)) * 1.3 + 1.0
    mean, std = kernel_inception_distance(fake, real)  # subsets of all 30: every subset is the whole set
    expected = mmd2_unbiased(fake, real)
    assert expected > 1 and mean == pytest.approx(expected, rel=1e-5)  # features are summed in float32
    assert std == pytest.approx(0, abs=1e-5 * expected)


# ---------------------------------------------------------------- the image pipeline against torch-fidelity
@pytest.fixture(scope="module")
def inception_setup(tmp_path_factory):
    """Random-weight Inception file and two PNG folders of different image statistics."""
    root = tmp_path_factory.mktemp("inception")
    weights = random_inception_weights(tmp_path_factory.getbasetemp())
    fake = write_png_folder(random_images(NUM_IMAGES, 32, seed=1), root / "fake")
    real = write_png_folder(random_images(NUM_REAL, 32, seed=2, noise=0.1), root / "real")
    return weights, fake, real


def test_is_pr_kid_match_torch_fidelity_end_to_end(inception_setup):
    """Same PNGs, same weights file: our loading, resizing and Inception features against torch-fidelity's own run.

    FID is left out: its Frechet distance is checked on features against clean-fid and pytorch-fid above, its
    pool features are the ones precision/recall and KID see here, and a 2048-d matrix square root of a singular
    product costs minutes of CPU.
    """
    # catches: a resize, dtype or channel-order difference in the image pipeline, or logits taken with the bias
    weights, fake, real = inception_setup
    ours = compute_metrics(
        fake, real, "is,pr,kid", extractor_options={"inception-v3-tf": {"weights": weights}},
        batch_size=10, use_cache=False,
    )
    theirs = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), isc=True, prc=True, kid=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        kid_subset_size=NUM_REAL, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
    )
    assert ours["is_mean"] > 1.05  # two samples per split: not the forced score of 1
    pairs = {
        "is_mean": "inception_score_mean", "is_std": "inception_score_std",
        "precision": "precision", "recall": "recall", "kid_mean": "kernel_inception_distance_mean",
    }
    for key, their_key in pairs.items():
        assert ours[key] == pytest.approx(theirs[their_key], rel=1e-3), key
    assert 0 < ours["precision"] < 1 or 0 < ours["recall"] < 1  # not a degenerate all-or-nothing case
    prov = ours["provenance"]
    assert prov["extractors"]["inception-v3-tf"]["weights_sha256"]
    assert prov["fake"]["num_samples"] == NUM_IMAGES


def test_spatial_features_are_mixed_6_conv_first_channels_channels_last(inception_setup):
    """sFID features: Mixed_6d.branch1x1 (TF mixed_6/conv), first 7 channels, flattened (H, W, C) as ADM does."""
    weights, _, _ = inception_setup
    images = torch.from_numpy(random_images(2, 32, seed=3)).permute(0, 3, 1, 2)
    ex = get_extractor("inception-v3-tf", weights=weights)
    spatial = ex.extract(images, ("spatial",))["spatial"]
    # independent path: run torch-fidelity's modules by hand up to Mixed_6d's 1x1 branch
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    net = ex.net
    with torch.no_grad():
        x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
        x = (x - 128) / 128
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c"]:
            x = getattr(net, name)(x)
        conv = net.Mixed_6d.branch1x1(x)  # (2, 192, 17, 17)
    assert spatial.shape == (2, 17 * 17 * 7)
    expected = conv[:, :7].permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(spatial, expected, rtol=1e-5, atol=1e-5)
    assert spatial.std() > 0
