"""Extractor registry and loading paths: DINOv2 via torch.hub (local repo / hub cache), I3D TorchScript, weights errors."""

import contextlib
import io

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from elit_bench.errors import UserError
from elit_bench.metrics import (
    FeatureExtractor,
    compute_metrics,
    get_extractor,
    list_extractors,
    register_extractor,
)
from elit_bench.metrics.extractors import dgm_eval_preprocess
from elit_bench.metrics.synthetic import random_images
from synthetic import TinyI3D, write_tiny_dinov2, write_tiny_i3d


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so nothing is found unless a test puts it there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub"


def test_dgm_eval_preprocessing_matches_torchvision_pipeline():
    images = random_images(3, 37, seed=0, noise=0.2)  # odd size: resampling matters
    ours = dgm_eval_preprocess(torch.from_numpy(images).permute(0, 3, 1, 2))
    pipeline = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                          T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])  # dgm-eval's DINOv2 transform
    expected = torch.stack([pipeline(Image.fromarray(im)) for im in images])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_dinov2_from_local_repo_and_weights(tmp_path, empty_hub):
    repo, weights = write_tiny_dinov2(tmp_path / "dinov2", tmp_path / "w.pth")
    ex = get_extractor("dinov2-vitl14", weights=weights, repo=repo)
    images = torch.from_numpy(random_images(4, 20, seed=1)).permute(0, 3, 1, 2)
    feats = ex.extract(images)["cls"]
    net = torch.hub.load(str(repo), "dinov2_vitl14", source="local", pretrained=False)
    net.load_state_dict(torch.load(weights, weights_only=True))
    torch.testing.assert_close(feats, net(dgm_eval_preprocess(images)))
    assert ex.identity()["weights_sha256"] and feats.shape == (4, 8)


def test_dinov2_from_hub_cache(tmp_path, empty_hub):
    write_tiny_dinov2(empty_hub / "facebookresearch_dinov2_main", empty_hub / "checkpoints" / "dinov2_vitl14_pretrain.pth")
    ex = get_extractor("dinov2-vitl14")
    assert ex.extract(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))["cls"].shape == (2, 8)


def test_missing_or_wrong_weights_are_clear_errors(tmp_path, empty_hub):
    with pytest.raises(UserError, match=r"weights-inception-2015-12-05-6726825d\.pth into .*checkpoints"):
        get_extractor("inception-v3-tf")
    with pytest.raises(UserError, match="does not exist"):
        get_extractor("inception-v3-tf", weights=tmp_path / "nope.pth")
    with pytest.raises(UserError, match="no DINOv2 code at"):
        get_extractor("dinov2-vitl14")
    repo, _ = write_tiny_dinov2(tmp_path / "dinov2", tmp_path / "w.pth")
    with pytest.raises(UserError, match=r"dinov2_vitl14_pretrain\.pth"):
        get_extractor("dinov2-vitl14", repo=repo)
    with pytest.raises(UserError, match=r"i3d_torchscript\.pt"):
        get_extractor("i3d-stylegan-v")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "wrong.pth")
    ex = get_extractor("inception-v3-tf", weights=tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="does not match torch-fidelity's InceptionV3 layout"):
        ex.extract(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    ex = get_extractor("dinov2-vitl14", repo=repo, weights=tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="does not match dinov2_vitl14"):
        ex.extract(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_i3d_torchscript_protocol(tmp_path):
    path = write_tiny_i3d(tmp_path / "i3d.pt")
    ex = get_extractor("i3d-stylegan-v", weights=path)
    videos = torch.randint(0, 256, (2, 3, 20, 12, 12), dtype=torch.uint8)
    feats = ex.extract(videos)["features"]
    torch.manual_seed(0)  # write_tiny_i3d seeds the same way, so this is the same network
    expected = TinyI3D()(videos[:, :, :16], rescale=True, resize=True, return_features=True)
    torch.testing.assert_close(feats, expected)
    with pytest.raises(UserError, match="at least 16 frames"):
        ex.extract(videos[:, :, :8])
    with pytest.raises(UserError, match="uint8 batches"):
        ex.extract(videos[:, :, 0])
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a TorchScript"):
        get_extractor("i3d-stylegan-v", weights=tmp_path / "broken.pt").extract(videos)


def frechet_of_features(a, b):
    """Frechet distance by pytorch-fid's reference function on float64 statistics (N - 1 covariance)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice on singular products
        return float(calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))


def test_fvd_and_video_fid_paths(tmp_path):
    """On videos, FVD is the Frechet distance of I3D clip features and an image metric (digits_fd) that of every
    frame's features; both equal the distances computed here from the networks directly."""
    # catches: FVD on frames or on the wrong frames, an image metric on the first frame of each clip only, or clip
    # and frame axes transposed when videos are flattened
    from elit_bench.metrics.digits_classifier import load_digits_classifier, to_model_input

    rng = np.random.default_rng(0)
    fake = rng.integers(0, 256, (20, 16, 12, 12, 3), dtype=np.uint8)
    real = rng.integers(0, 128, (20, 16, 12, 12, 3), dtype=np.uint8)
    i3d = write_tiny_i3d(tmp_path / "i3d.pt")
    res = compute_metrics(fake, real, "fvd,digits_fd", extractor_options={"i3d-stylegan-v": {"weights": i3d}}, use_cache=False)
    detector, digits = torch.jit.load(str(i3d)), load_digits_classifier()
    with torch.no_grad():
        clips = [detector(torch.from_numpy(v).permute(0, 4, 1, 2, 3).contiguous(), rescale=True, resize=True,
                          return_features=True) for v in (fake, real)]
        frames = [digits(to_model_input(torch.from_numpy(v.reshape(-1, 12, 12, 3))))[0] for v in (fake, real)]
        first = [digits(to_model_input(torch.from_numpy(v[:, 0])))[0] for v in (fake, real)]
    assert res["fvd"] == pytest.approx(frechet_of_features(*clips), rel=1e-4)
    assert res["digits_fd"] == pytest.approx(frechet_of_features(*frames), rel=1e-4)
    assert res["digits_fd"] != pytest.approx(frechet_of_features(*first), rel=1e-2)  # every frame, not the first
    assert res["provenance"]["reference_statistics"]["digits_fd"]["num_samples"] == 20 * 16  # every frame
    with pytest.raises(UserError, match="needs videos"):
        compute_metrics(fake[:, 0], real[:, 0], "fvd", extractor_options={"i3d-stylegan-v": {"weights": i3d}}, use_cache=False)


def test_registry():
    assert {"inception-v3-tf", "dinov2-vitl14", "i3d-stylegan-v", "digits-cnn"} <= set(list_extractors())

    class Brightness(FeatureExtractor):
        name, preprocessing, outputs = "brightness-test", "none", ("mean",)

        def _load(self):
            return torch.nn.Identity()

        def _forward(self, batch):
            return {"mean": batch.float().mean(dim=(2, 3))}

    weights = __file__  # any file: its hash identifies the "weights"
    register_extractor("brightness-test", lambda device="cpu": Brightness(weights, device))
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("brightness-test", lambda: None)
    feats = get_extractor("brightness-test").extract(torch.full((2, 3, 4, 4), 10, dtype=torch.uint8))["mean"]
    assert feats.shape == (2, 3) and float(feats[0, 0]) == 10.0
    with pytest.raises(UserError, match="unknown feature extractor"):
        get_extractor("nope")
