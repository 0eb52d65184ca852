"""`elit-bench metrics` end to end, and bad input -> exit status 2."""

import json

import numpy as np
import pytest
import torch

from elit_bench.cli import main
from elit_bench.metrics.digits_classifier import load_digits_split, render_uint8
from elit_bench.metrics.stats import FeatureStats, save_statistics
from elit_bench.metrics.synthetic import (
    random_images,
    random_inception_weights,
    write_png_folder,
    write_tiny_dinov2,
    write_tiny_i3d,
)


def run(capsys, *args):
    code = main(["metrics", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def digits(tmp_path):
    """fake: .npz (ADM layout, RGB, labels in arr_1); real: a PNG folder."""
    split = load_digits_split()
    fake_images = render_uint8(torch.from_numpy(split["heldout_x"][:60]), 16).numpy()[..., None].repeat(3, -1)
    np.savez(tmp_path / "fake.npz", arr_0=fake_images, arr_1=split["heldout_y"][:60])
    real_images = render_uint8(torch.from_numpy(split["train_x"][:80]), 32).numpy()[..., None].repeat(3, -1)
    write_png_folder(real_images, tmp_path / "real")
    return tmp_path / "fake.npz", tmp_path / "real"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def test_digits_json_end_to_end(digits, tmp_path, capsys):
    fake, real = digits
    code, out, _ = run(capsys, "--fake", fake, "--real", real, "--metrics", "digits_fd,digits_acc",
                       "--cache-dir", tmp_path / "cache", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["digits_acc"] >= 0.97 and res["digits_fd"] > 0
    prov = res["provenance"]
    assert prov["fake"]["num_samples"] == 60 and prov["real"]["num_samples"] == 80
    assert prov["extractors"]["digits-cnn"]["weights_sha256"]
    assert len(prov["reference_statistics"]["digits_fd"]["sha256"]) == 64
    assert any((tmp_path / "cache").iterdir())


def test_save_real_stats_then_compare_against_them(digits, tmp_path, capsys):
    fake, real = digits
    stats = tmp_path / "real_stats.npz"
    assert run(capsys, "--real", real, "--metrics", "digits_fd", "--save-real-stats", stats, "--no-cache")[0] == 0
    assert stats.is_file()
    _, from_images, _ = run(capsys, "--fake", fake, "--real", real, "--metrics", "digits_fd", "--no-cache", "--json")
    code, from_stats, _ = run(capsys, "--fake", fake, "--real", stats, "--metrics", "digits_fd", "--no-cache", "--json")
    assert code == 0
    assert json.loads(from_stats)["digits_fd"] == pytest.approx(json.loads(from_images)["digits_fd"], rel=1e-12)
    assert json.loads(from_stats)["provenance"]["reference_statistics"]["digits_fd"]["origin"] == "stored"
    code, text, _ = run(capsys, "--fake", fake, "--real", stats, "--metrics", "digits_fd", "--no-cache")
    assert code == 0 and text.startswith("digits_fd: ")


def test_inception_metrics_with_weights_file(tmp_path, tmp_path_factory, capsys):
    weights = random_inception_weights(tmp_path_factory.getbasetemp())
    fake = write_png_folder(random_images(10, 24, seed=5), tmp_path / "fake")
    real = write_png_folder(random_images(5, 24, seed=6, noise=0.1), tmp_path / "real")
    code, out, _ = run(capsys, "--fake", fake, "--real", real, "--metrics", "is,pr,kid",
                       "--inception-weights", weights, "--batch", 5, "--no-cache", "--json")
    assert code == 0
    res = json.loads(out)
    # 10 samples in 10 splits: one sample per split, so the score is exactly 1
    assert res["is_mean"] == pytest.approx(1.0) and 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1
    assert res["kid_mean"] > 0
    assert res["provenance"]["extractors"]["inception-v3-tf"]["weights"] == str(weights)


def test_fdd_and_fvd_with_local_networks(tmp_path, capsys):
    repo, dino = write_tiny_dinov2(tmp_path / "dinov2", tmp_path / "dino.pth")
    i3d = write_tiny_i3d(tmp_path / "i3d.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "fake.npz", arr_0=rng.integers(0, 256, (12, 16, 10, 10, 3), dtype=np.uint8))
    np.savez(tmp_path / "real.npz", arr_0=rng.integers(0, 100, (12, 16, 10, 10, 3), dtype=np.uint8))
    code, out, _ = run(capsys, "--fake", tmp_path / "fake.npz", "--real", tmp_path / "real.npz", "--metrics", "fdd,fvd",
                       "--dinov2-repo", repo, "--dinov2-weights", dino, "--i3d", i3d, "--no-cache", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["fdd"] > 0 and res["fvd"] > 0


def bad_inputs(tmp):
    """(name, extra CLI args, expected message) for inputs that must exit with status 2."""
    (tmp / "junk.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    np.savez(tmp / "layout.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    np.savez(tmp / "ok.npz", arr_0=np.zeros((12, 8, 8, 3), np.uint8))
    data = (tmp / "ok.npz").read_bytes()
    (tmp / "truncated.npz").write_bytes(data[: len(data) - 300])
    small = FeatureStats.from_features(np.random.default_rng(0).standard_normal((30, 10)))
    save_statistics(tmp / "dim10.npz", {"_digits": small})
    ok = tmp / "ok.npz"
    return [
        ("missing-weights", ["--fake", ok, "--real", ok, "--metrics", "fid"], "weights-inception-2015-12-05"),
        ("weights-path", ["--fake", ok, "--real", ok, "--inception-weights", tmp / "none.pth"], "does not exist"),
        ("corrupt", ["--fake", tmp / "junk.npz", "--real", ok, "--metrics", "digits_fd"], "not a readable .npz"),
        ("truncated", ["--fake", tmp / "truncated.npz", "--real", ok, "--metrics", "digits_fd"], "npz"),
        ("layout", ["--fake", tmp / "layout.npz", "--real", ok, "--metrics", "digits_fd"], "neither samples"),
        ("dims", ["--fake", ok, "--real", tmp / "dim10.npz", "--metrics", "digits_fd"], "dimensions do not match"),
        ("stats-only", ["--fake", tmp / "dim10.npz", "--metrics", "is"], "holds only statistics"),
        ("no-real", ["--fake", ok, "--metrics", "pr"], "comparison needs the real"),
        ("metric", ["--fake", ok, "--metrics", "fid,nope"], "unknown metric 'nope'"),
        ("no-labels", ["--fake", ok, "--metrics", "digits_acc"], "needs one class label per sample"),
        ("nothing", ["--real", ok], "give --fake PATH"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_bad_input_exits_2(case, tmp_path, capsys, empty_hub):
    cases = bad_inputs(tmp_path)
    assert len(cases) == 11
    name, args, message = cases[case]
    code, _, err = run(capsys, *args, "--no-cache")
    assert code == 2, name
    assert message in err, (name, err)


def test_bad_batch_size_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["metrics", "--fake", "x", "--batch", "0"])
    assert exc.value.code == 2
