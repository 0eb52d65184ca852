"""Agreement with the reference implementations: clean-fid, pytorch-fid, torch-fidelity."""

import contextlib
import io

import numpy as np
import pytest
import torch
import torch_fidelity
from cleanfid.fid import frechet_distance as cleanfid_frechet
from pytorch_fid.fid_score import calculate_frechet_distance as pytorch_fid_frechet

from elit_bench.errors import UserError
from elit_bench.metrics import FeatureStats, compute_metrics, frechet_distance, get_extractor
from elit_bench.metrics.synthetic import random_images, random_inception_weights, write_png_folder

NUM_IMAGES = 16  # per set: enough for 10 IS splits, small enough for a CPU test


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


@pytest.fixture(scope="module")
def inception_setup(tmp_path_factory):
    """Random-weight Inception file and two PNG folders of different image statistics."""
    root = tmp_path_factory.mktemp("inception")
    weights = random_inception_weights(tmp_path_factory.getbasetemp())
    fake = write_png_folder(random_images(NUM_IMAGES, 32, seed=1), root / "fake")
    real = write_png_folder(random_images(NUM_IMAGES, 32, seed=2, noise=0.1), root / "real")
    return weights, fake, real


def test_fid_is_pr_kid_match_torch_fidelity(inception_setup):
    weights, fake, real = inception_setup
    ours = compute_metrics(
        fake, real, "fid,is,pr,kid", extractor_options={"inception-v3-tf": {"weights": weights}},
        batch_size=10, use_cache=False,
    )
    theirs = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), fid=True, isc=True, prc=True, kid=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        kid_subset_size=NUM_IMAGES, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
    )
    assert ours["fid"] > 1.0 and ours["is_mean"] > 1.05  # features are not degenerate
    pairs = {
        "fid": "frechet_inception_distance", "is_mean": "inception_score_mean", "is_std": "inception_score_std",
        "precision": "precision", "recall": "recall", "kid_mean": "kernel_inception_distance_mean",
    }
    for key, their_key in pairs.items():
        assert ours[key] == pytest.approx(theirs[their_key], rel=1e-3), key
    prov = ours["provenance"]
    assert prov["extractors"]["inception-v3-tf"]["weights_sha256"]
    assert prov["reference_statistics"]["fid"]["num_samples"] == NUM_IMAGES
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
