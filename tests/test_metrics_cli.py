"""`elit-bench metrics` end to end, and bad input -> exit status 2."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from elit_bench.cli import main
from elit_bench.data.digits import load_digits_split, render_uint8
from elit_bench.metrics.stats import FeatureStats, save_statistics
from elit_bench.metrics.synthetic import random_images, write_png_folder
from synthetic import random_inception_weights, write_tiny_dinov2, write_tiny_i3d


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
    """`--inception-weights FILE` on PNG folders gives torch-fidelity's own IS, precision/recall and KID."""
    # catches: the CLI loading other weights than the file named, a --batch that changes results, or the metric
    # keys mixed up (precision for recall); 20 samples put 2 in each IS split, so IS is not forced to 1
    import torch_fidelity

    weights = random_inception_weights(tmp_path_factory.getbasetemp())
    fake = write_png_folder(random_images(20, 24, seed=5), tmp_path / "fake")
    real = write_png_folder(random_images(5, 24, seed=6, noise=0.1), tmp_path / "real")
    code, out, _ = run(capsys, "--fake", fake, "--real", real, "--metrics", "is,pr,kid",
                       "--inception-weights", weights, "--batch", 3, "--no-cache", "--json")
    assert code == 0
    res = json.loads(out)
    theirs = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), isc=True, prc=True, kid=True, kid_subset_size=5,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        cuda=False, cache=False, verbose=False)
    pairs = {"is_mean": "inception_score_mean", "is_std": "inception_score_std", "precision": "precision",
             "recall": "recall", "kid_mean": "kernel_inception_distance_mean"}
    for ours, their in pairs.items():
        assert res[ours] == pytest.approx(theirs[their], rel=1e-3), ours
    assert res["is_mean"] > 1.05
    assert res["provenance"]["extractors"]["inception-v3-tf"]["weights"] == str(weights)


def frechet_of_features(a, b):
    """Frechet distance by pytorch-fid's reference function on float64 statistics (N - 1 covariance)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice on singular products
        return float(calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))


def test_fdd_and_fvd_with_local_networks(tmp_path, capsys):
    """FDD (every frame, DINOv2 stand-in) and FVD (16-frame clips, I3D stand-in) equal the Frechet distance of the
    stand-in networks' features computed here, outside elit-bench, with dgm-eval's and StyleGAN-V's calls."""
    # catches: FDD on one frame per clip, a preprocessing other than dgm-eval's, FVD without rescale/resize, the
    # wrong network output, or the two sets swapped into one statistic
    import torchvision.transforms as T
    from PIL import Image

    repo, dino = write_tiny_dinov2(tmp_path / "dinov2", tmp_path / "dino.pth")
    i3d = write_tiny_i3d(tmp_path / "i3d.pt")
    rng = np.random.default_rng(0)
    fake_clips = rng.integers(0, 256, (12, 16, 10, 10, 3), dtype=np.uint8)
    real_clips = rng.integers(0, 100, (12, 16, 10, 10, 3), dtype=np.uint8)
    np.savez(tmp_path / "fake.npz", arr_0=fake_clips)
    np.savez(tmp_path / "real.npz", arr_0=real_clips)
    code, out, _ = run(capsys, "--fake", tmp_path / "fake.npz", "--real", tmp_path / "real.npz", "--metrics", "fdd,fvd",
                       "--dinov2-repo", repo, "--dinov2-weights", dino, "--i3d", i3d, "--no-cache", "--json")
    assert code == 0
    res = json.loads(out)

    net = torch.hub.load(str(repo), "dinov2_vitl14", source="local", pretrained=False)
    net.load_state_dict(torch.load(dino, weights_only=True))
    dgm_eval = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                          T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    detector = torch.jit.load(str(i3d))
    with torch.no_grad():
        dino_features = [net(torch.stack([dgm_eval(Image.fromarray(f)) for f in clips.reshape(-1, 10, 10, 3)]))
                         for clips in (fake_clips, real_clips)]
        i3d_features = [detector(torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous(), rescale=True,
                                 resize=True, return_features=True) for clips in (fake_clips, real_clips)]
    assert dino_features[0].shape == (12 * 16, 8) and i3d_features[0].shape == (12, 16)
    assert res["fdd"] == pytest.approx(frechet_of_features(*dino_features), rel=1e-4)
    assert res["fvd"] == pytest.approx(frechet_of_features(*i3d_features), rel=1e-4)
    assert res["fdd"] > 0.1 and res["fvd"] > 0.1  # the two sets differ: not a vacuous 0 = 0


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
