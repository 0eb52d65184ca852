"""Latent data sets: the on-disk format, `elit-bench data encode` with a tiny AutoencoderKL, video latents."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from elit_bench.checkpoint import load_checkpoint
from elit_bench.cli import main
from elit_bench.data import build_dataset, describe_data, model_input_kwargs
from elit_bench.data.encode import center_crop_arr
from elit_bench.data.latents import LatentDataset, LatentWriter, read_meta
from elit_bench.errors import UserError

TINY_TRAIN = ["--model", "ELIT-DiT-S/2", "--batch", "4", "--steps", "2", "model_kwargs.hidden_size=32",
              "model_kwargs.depth=3", "model_kwargs.num_heads=2", "warmup=1", "progress=false"]


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    """A randomly initialised 4-channel AutoencoderKL that downsamples by 2, saved like a real one."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4, sample_size=16,
                        scaling_factor=0.5, shift_factor=0.1)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """ImageFolder with classes 'cat' (3 images) and 'dog' (2), of assorted sizes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, sizes in (("cat", [(40, 30), (16, 16), (70, 50)]), ("dog", [(33, 64), (20, 18)])):
        (root / name).mkdir()
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_adm_center_crop():
    wide = np.zeros((40, 100, 3), dtype=np.uint8)
    wide[:, 30:70] = 255  # a white centre square of side 40 in a black frame
    out = center_crop_arr(Image.fromarray(wide), 16)
    assert out.shape == (16, 16, 3) and out.min() > 200  # only the centre survives (bicubic edges blur a bit)
    big = center_crop_arr(Image.fromarray(np.full((300, 200, 3), 7, dtype=np.uint8)), 32)
    assert big.shape == (32, 32, 3) and (big == 7).all()


def test_encode_image_folder(tmp_path, autoencoder, image_folder):
    from elit_bench.data.encode import _Images, load_autoencoder

    out = tmp_path / "latents"
    argv = ["data", "encode", str(image_folder), "--autoencoder", str(autoencoder), "--resolution", "16",
            "--out", str(out), "--batch", "2", "--shard-size", "3", "--workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    meta = read_meta(out)
    assert meta["num_samples"] == 5 and len(meta["shards"]) == 2
    assert meta["class_names"] == ["cat", "dog"] and meta["channels"] == 4 and meta["latent_shape"] == [8, 8]
    assert meta["autoencoder"] == {"path": str(autoencoder.resolve()), "scaling_factor": 0.5, "shift_factor": 0.1}
    # the stored latents are the posterior means, normalised with the autoencoder's factors
    data = LatentDataset(out)
    x, y = data.load(np.arange(5))
    assert y.tolist() == [0, 0, 0, 1, 1]
    images = _Images(*zip(*[(p, 0) for p in sorted(image_folder.rglob("*.png"))]), 16)
    pixels = torch.stack([images[i][0] for i in range(5)])
    with torch.no_grad():
        z = load_autoencoder(autoencoder).encode(pixels).latent_dist.mean
    torch.testing.assert_close(x, (z - 0.1) * 0.5, atol=2e-3, rtol=2e-3)  # float16 storage
    # each image is stored flipped too: index i + N is image i encoded mirrored
    assert meta["flips"] is True and data.views == 2 and not data.posterior
    with torch.no_grad():
        z_flip = load_autoencoder(autoencoder).encode(pixels.flip(-1)).latent_dist.mean
    x_flip, y_flip = data.load(np.arange(5, 10))
    assert torch.equal(y_flip, y)
    torch.testing.assert_close(x_flip, (z_flip - 0.1) * 0.5, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(x_flip, x, atol=1e-2)
    # refuses to overwrite an existing data set
    assert main(argv) == 2


def test_encode_posterior_and_train_on_draws_from_it(tmp_path, autoencoder, image_folder, monkeypatch):
    from elit_bench.data.encode import _Images, load_autoencoder
    from elit_bench.distributed import Dist
    from elit_bench.training import trainer as trainer_module
    from elit_bench.training.config import resolve_config

    out = tmp_path / "latents"
    assert main(["data", "encode", str(image_folder), "--autoencoder", str(autoencoder), "--resolution", "16",
                 "--out", str(out), "--workers", "0", "--device", "cpu", "--posterior", "--no-flip"]) == 0
    data = LatentDataset(out)
    assert data.posterior and data.views == 1
    x, _ = data.load(np.arange(5))
    images = _Images(*zip(*[(p, 0) for p in sorted(image_folder.rglob("*.png"))]), 16)
    with torch.no_grad():
        dist = load_autoencoder(autoencoder).encode(torch.stack([images[i][0] for i in range(5)])).latent_dist
    assert x.shape[1] == 8  # mean and std on the channel axis
    torch.testing.assert_close(x[:, 4:], dist.std * 0.5, atol=2e-3, rtol=2e-3)
    # the trainer feeds the model a draw mean + std * eps: not the mean, and the same draw for the same seed
    seen = []
    real = trainer_module.rectified_flow_loss
    monkeypatch.setattr(trainer_module, "rectified_flow_loss",
                        lambda net, x1, *a, **kw: seen.append(x1.clone()) or real(net, x1, *a, **kw))
    cfg = {"model": "DiT-S/2", "data": str(out), "batch": 5, "steps": 3, "progress": False, "warmup": 1,
           "model_kwargs": {"hidden_size": 32, "depth": 2, "num_heads": 2}}
    for run in ("a", "b"):
        trainer_module.Trainer(resolve_config({**cfg, "out": str(tmp_path / run)}), Dist()).train_step()
    assert seen[0].shape[1] == 4 and torch.equal(seen[0], seen[1])
    order = trainer_module.DataOrder(5, 0).take(5)
    mean, std = x[order, :4], x[order, 4:]
    eps = (seen[0] - mean) / std
    assert 0.5 < float(eps.std()) < 1.5 and float((seen[0] - mean).abs().max()) > 1e-3


def test_train_on_encoded_latents(tmp_path, autoencoder, image_folder):
    out = tmp_path / "latents"
    assert main(["data", "encode", str(image_folder), "--autoencoder", str(autoencoder), "--resolution", "16",
                 "--out", str(out), "--workers", "0", "--device", "cpu"]) == 0
    run = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, "--data", str(out), "--out", str(run), "model_kwargs.group_size=2"]) == 0
    cfg = load_checkpoint(run / "checkpoints/last.pt")["config"]
    assert cfg["data"]["kind"] == "latents" and cfg["data"]["resolution"] == 16
    assert cfg["data"]["autoencoder"]["scaling_factor"] == 0.5
    assert {k: cfg["model_kwargs"][k] for k in ("input_size", "in_channels", "num_classes")} == \
        {"input_size": 8, "in_channels": 4, "num_classes": 2}
    assert main(["train", *TINY_TRAIN, "--data", str(out), "--resolution", "32", "--out", str(tmp_path / "r2")]) == 2


def test_encode_failures_leave_nothing(tmp_path, autoencoder, image_folder, capsys):
    out = tmp_path / "latents"
    base = ["data", "encode", "--resolution", "16", "--out", str(out), "--workers", "0", "--device", "cpu"]
    assert main([*base, str(tmp_path / "missing"), "--autoencoder", str(autoencoder)]) == 2
    assert main([*base, str(image_folder), "--autoencoder", str(tmp_path / "no-vae")]) == 2
    broken = tmp_path / "broken"
    for name in ("a", "b"):
        (broken / name).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(broken / name / "ok.png")
    (broken / "b" / "zz.png").write_bytes(b"not an image")
    assert main([*base, str(broken), "--autoencoder", str(autoencoder), "--batch", "1"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # no data set, no temporary directory


def _video_dataset(path, n=6, frames=2, shard_size=4):
    meta = {"num_classes": 3, "channels": 4, "latent_shape": [frames, 4, 4], "frames": frames, "resolution": 32,
            "autoencoder": {"path": "/models/cogvideox-vae", "scaling_factor": 1.15, "shift_factor": 0.0}}
    writer = LatentWriter(path, meta, shard_size=shard_size)
    latents = np.random.default_rng(0).standard_normal((n, 4, frames, 4, 4)).astype(np.float32)
    labels = np.arange(n) % 3
    writer.add(latents[:5], labels[:5])
    writer.add(latents[5:], labels[5:])
    writer.close()
    return latents, labels


def test_video_latents_have_a_time_axis_and_train(tmp_path):
    latents, labels = _video_dataset(tmp_path / "video")
    data = build_dataset(describe_data(str(tmp_path / "video")))
    assert data.description["frames"] == 2 and len(data) == 6
    order = np.array([5, 0, 4, 1])  # across both shards, out of order
    x, y = data.load(order)
    assert x.shape == (4, 4, 2, 4, 4)
    torch.testing.assert_close(x, torch.from_numpy(latents[order]).half().float())
    assert y.tolist() == labels[order].tolist()
    assert model_input_kwargs(data.description) == {"input_size": 4, "frames": 2, "in_channels": 4, "num_classes": 3}
    run = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, "--data", str(tmp_path / "video"), "--out", str(run)]) == 0
    assert load_checkpoint(run / "checkpoints/last.pt")["config"]["model_kwargs"]["frames"] == 2


def test_incomplete_latent_directory_is_refused(tmp_path):
    _video_dataset(tmp_path / "video")
    (tmp_path / "video" / "labels-00001.npy").unlink()
    with pytest.raises(UserError, match="incomplete"):
        describe_data(str(tmp_path / "video"))
    (tmp_path / "video" / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="elit-latents"):
        describe_data(str(tmp_path / "video"))
