"""Statistics, batch-size independence, the feature cache and ADM-layout .npz files."""

import numpy as np
import pytest
import torch

from elit_bench.data.digits import load_digits_split, render_uint8
from elit_bench.errors import UserError
from elit_bench.metrics import (
    ArraySamples,
    Evaluator,
    FeatureCache,
    FeatureStats,
    compute_metrics,
    extract_features,
    frechet_distance_stats,
    get_extractor,
    load_statistics,
    open_source,
    save_statistics,
)
from elit_bench.metrics import compute as compute_module
from elit_bench.metrics.synthetic import random_images, write_png_folder
from synthetic import random_inception_weights


def digit_images(n, size=16, part="heldout_x"):
    return render_uint8(torch.from_numpy(load_digits_split()[part][:n]), size).numpy()


def test_feature_stats_float64_unbiased():
    feats = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    st = FeatureStats.from_features(feats)
    assert st.mu.dtype == np.float64 and st.sigma.dtype == np.float64
    np.testing.assert_allclose(st.sigma, np.cov(feats.astype(np.float64), rowvar=False, ddof=1), rtol=1e-12)
    assert st.num == 50 and st.dim == 6


def test_digits_features_do_not_depend_on_batch_size():
    samples = ArraySamples(digit_images(37))
    ex = get_extractor("digits-cnn")
    runs = [extract_features(ex, samples, ("penultimate", "logits"), b) for b in (37, 8, 1)]
    # equal up to float32 round-off: CPU kernels may block the arithmetic differently per batch size
    for other in runs[1:]:
        for name in ("penultimate", "logits"):
            np.testing.assert_allclose(runs[0][name], other[name], rtol=1e-5, atol=1e-5)
    stats = [FeatureStats.from_features(r["penultimate"]) for r in runs]
    for other in stats[1:]:
        np.testing.assert_allclose(stats[0].mu, other.mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[0].sigma, other.sigma, rtol=1e-5, atol=1e-5)


def test_inception_features_do_not_depend_on_batch_size(tmp_path_factory):
    weights = random_inception_weights(tmp_path_factory.getbasetemp())
    samples = ArraySamples(random_images(3, 24, seed=4))
    ex = get_extractor("inception-v3-tf", weights=weights)
    full, split = (extract_features(ex, samples, ex.outputs, b) for b in (3, 2))
    for name in ex.outputs:
        np.testing.assert_allclose(full[name], split[name], rtol=1e-5, atol=1e-5)
        assert full[name].std() > 0


def test_feature_cache_hit_and_keys(tmp_path, monkeypatch):
    fake = ArraySamples(digit_images(30))
    real = ArraySamples(digit_images(30, part="train_x"))
    kwargs = dict(metrics="digits_fd", cache_dir=tmp_path / "cache")
    first = compute_metrics(fake, real, **kwargs)
    entries = sorted((tmp_path / "cache").iterdir())
    assert len(entries) == 2 and all((e / "penultimate.npy").is_file() and (e / "meta.json").is_file() for e in entries)
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # atomic writes leave no temporaries

    def no_extraction(*args, **kw):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(compute_module, "extract_features", no_extraction)
    second = compute_metrics(ArraySamples(fake.array.copy()), ArraySamples(real.array.copy()), **kwargs)
    assert second["digits_fd"] == first["digits_fd"]

    ident = get_extractor("digits-cnn").identity()
    key = FeatureCache.key(fake.content_sha256(), ident)
    assert key == FeatureCache.key(ArraySamples(fake.array.copy()).content_sha256(), ident)
    assert key != FeatureCache.key(real.content_sha256(), ident)
    assert key != FeatureCache.key(fake.content_sha256(), {**ident, "weights_sha256": "other"})
    assert key != FeatureCache.key(fake.content_sha256(), {**ident, "preprocessing": "other"})


def test_adm_npz_streaming_and_stored_statistics(tmp_path):
    images = digit_images(25)
    labels = load_digits_split()["heldout_y"][:25]
    stored = FeatureStats.from_features(np.random.default_rng(0).standard_normal((100, 64)))
    plain, packed = tmp_path / "plain.npz", tmp_path / "packed.npz"
    np.savez(plain, arr_0=images[..., None].repeat(3, -1), arr_1=labels)
    np.savez_compressed(packed, arr_0=images[..., None].repeat(3, -1), arr_1=labels,
                        mu_digits=stored.mu, sigma_digits=stored.sigma, mu=np.zeros(4), sigma=np.eye(4))
    a, b = open_source(plain), open_source(packed)
    assert a.samples.num == 25 and a.samples.sample_shape == (16, 16, 3)
    np.testing.assert_array_equal(np.concatenate(list(a.samples.batches(3, 20, 4))), images[3:20, ..., None].repeat(3, -1))
    np.testing.assert_array_equal(np.concatenate(list(b.samples.batches(0, 25, 7))), images[..., None].repeat(3, -1))
    assert a.samples.content_sha256() == b.samples.content_sha256()
    np.testing.assert_array_equal(b.samples.labels, labels)
    assert set(b.stats) == {"", "_digits"} and not a.stats

    res = compute_metrics(a, b, "digits_fd,digits_acc", use_cache=False)
    ref = res["provenance"]["reference_statistics"]["digits_fd"]
    assert ref["origin"] == "stored" and ref["sha256"] == stored.sha256
    fresh = FeatureStats.from_features(extract_features(get_extractor("digits-cnn"), a.samples, ("penultimate",))["penultimate"])
    assert res["digits_fd"] == pytest.approx(frechet_distance_stats(fresh, stored), rel=1e-9)
    assert res["digits_acc"] >= 0.97


def test_statistics_file_round_trip_gives_same_metric(tmp_path):
    fake = write_png_folder(digit_images(40)[..., None].repeat(3, -1), tmp_path / "fake")
    real = write_png_folder(digit_images(60, part="train_x")[..., None].repeat(3, -1), tmp_path / "real")
    ev = Evaluator(use_cache=False)
    meta = ev.save_statistics(open_source(real), ["digits_fd"], tmp_path / "real_stats.npz")
    stats, stored_meta = load_statistics(tmp_path / "real_stats.npz")
    assert stored_meta == meta and stats["_digits"].num == 60
    assert meta["extractors"]["digits-cnn"]["weights_sha256"]
    from_images = compute_metrics(fake, real, "digits_fd", use_cache=False)
    from_stats = compute_metrics(fake, tmp_path / "real_stats.npz", "digits_fd", use_cache=False)
    assert from_stats["digits_fd"] == pytest.approx(from_images["digits_fd"], rel=1e-12)
    assert from_images["digits_fd"] > 0


def test_statistics_from_other_weights_are_refused(tmp_path):
    st = FeatureStats.from_features(np.random.default_rng(0).standard_normal((80, 64)))
    save_statistics(tmp_path / "s.npz", {"_digits": st}, {"extractors": {"digits-cnn": {"weights_sha256": "0" * 64}}})
    with pytest.raises(UserError, match="different digits-cnn weights"):
        compute_metrics(ArraySamples(digit_images(30)), tmp_path / "s.npz", "digits_fd", use_cache=False)


def test_bad_npz_files_raise_user_errors(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive at all")
    np.savez(tmp_path / "layout.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((2, 8, 8, 3), np.float32))
    np.savez(tmp_path / "half.npz", mu=np.zeros(3))
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(4))
    cases = {"junk": "not a readable .npz", "layout": "neither samples", "float": "must be uint8",
             "half": "only one of mu / sigma", "shape": "mu .D,. and sigma"}
    for name, message in cases.items():
        with pytest.raises(UserError, match=message):
            open_source(tmp_path / f"{name}.npz")
    np.savez(tmp_path / "ok.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="npz"):
        open_source(tmp_path / "truncated.npz")
