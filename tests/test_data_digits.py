"""The embedded digits, their zero-padded variant and the moving-digits clips."""

import json

import numpy as np
import pytest
import torch

from elit_bench.cli import main
from elit_bench.data import build_dataset, describe_data, model_input_kwargs
from elit_bench.data.digits import load_digits_split, render_uint8
from elit_bench.errors import UserError


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


def test_moving_digits_sway_both_ways():
    plain = build_dataset(describe_data("digits", 8))
    clips = build_dataset(describe_data("moving-digits", 8))
    assert clips.description["frames"] == 8 and len(clips) == len(plain)
    idx = np.array([4, 7])  # an even clip moves right, an odd one left
    (x, y), (v, w) = plain.load(idx), clips.load(idx)
    assert v.shape == (2, 1, 8, 8, 8) and torch.equal(y, w)
    for f, shift in enumerate((0, 1, 2, 1, 0, -1, -2, -1)):
        assert torch.equal(v[0, :, f], x[0].roll(shift, dims=-1))
        assert torch.equal(v[1, :, f], x[1].roll(-shift, dims=-1))
    assert model_input_kwargs(clips.description) == {"input_size": 8, "frames": 8, "in_channels": 1, "num_classes": 10}


def test_per_frame_digits_metrics_on_clips(tmp_path):
    """Image metrics see every frame of a video; digits_acc gives each frame its clip's label."""
    # catches: clips scored on their first frame only, frames of one clip given another clip's label, or accuracy
    # counted per clip; compared with the classifier run here on every frame (a set against itself would be 0
    # by construction, so the fake set is a different subset of clips)
    from pytorch_fid.fid_score import calculate_frechet_distance

    from elit_bench.data.digits import moving_digits_uint8
    from elit_bench.metrics import compute_metrics
    from elit_bench.metrics.digits_classifier import load_digits_classifier, to_model_input

    clips, labels = moving_digits_uint8(16, split="heldout")
    real = tmp_path / "real.npz"
    np.savez(real, arr_0=np.repeat(clips.numpy()[..., None], 3, axis=-1), arr_1=labels.numpy())
    fake = tmp_path / "fake.npz"
    wrong = (labels.numpy()[:64] + 1) % 10
    np.savez(fake, arr_0=np.repeat(clips.numpy()[:64, ..., None], 3, axis=-1), arr_1=wrong)
    ours = compute_metrics(fake, real, ["digits_fd"], use_cache=False)["digits_fd"]
    right = compute_metrics(real, None, ["digits_acc"], use_cache=False)["digits_acc"]
    wrong_acc = compute_metrics(fake, None, ["digits_acc"], use_cache=False)["digits_acc"]

    frames = clips.shape[1]
    with torch.no_grad():
        features, logits = load_digits_classifier()(to_model_input(clips.reshape(-1, *clips.shape[2:])))
    predicted = logits.argmax(-1).view(-1, frames)  # (clips, frames)
    stats = lambda f: (f.mean(0), np.cov(f, rowvar=False))
    every = features.double().numpy().reshape(len(clips), frames, -1)
    expected = calculate_frechet_distance(*stats(every[:64].reshape(64 * frames, -1)), *stats(every.reshape(-1, every.shape[-1])))
    first_only = calculate_frechet_distance(*stats(every[:64, 0]), *stats(every[:, 0]))
    assert ours == pytest.approx(expected, rel=1e-4) and ours != pytest.approx(first_only, rel=1e-2)
    assert right == pytest.approx((predicted == labels[:, None]).double().mean().item(), abs=1e-12)
    assert wrong_acc == pytest.approx((predicted[:64] == torch.from_numpy(wrong)[:, None]).double().mean().item(), abs=1e-12)
    assert right > 0.9 and wrong_acc < 0.1


def test_smoke_reference_for_clips_is_the_heldout_clips(tmp_path):
    from elit_bench.data.digits import moving_digits_uint8
    from elit_bench.suites.runner import digits_reference

    ref = np.load(digits_reference(tmp_path, 8, data="moving-digits"))
    clips, labels = moving_digits_uint8(8, split="heldout")
    assert ref["arr_0"].shape == (*clips.shape, 3) and (ref["arr_0"] == clips.numpy()[..., None]).all()
    assert (ref["arr_1"] == labels.numpy()).all()
    assert np.load(digits_reference(tmp_path, 8))["arr_0"].shape == (len(labels), 8, 8, 3)


def test_video_model_trains_on_moving_digits(tmp_path):
    from elit_bench.checkpoint import load_checkpoint

    run = tmp_path / "run"
    argv = ["train", "--model", "ELIT-DiT-S/2", "--data", "moving-digits", "--resolution", "8", "--batch", "2",
            "--steps", "2", "--out", str(run), "model_kwargs.hidden_size=32", "model_kwargs.depth=3",
            "model_kwargs.num_heads=2", "model_kwargs.patch_size=[1,2,2]", "model_kwargs.group_size=[2,2,2]",
            "progress=false"]
    assert main(argv) == 0
    config = load_checkpoint(run / "checkpoints/last.pt")["config"]
    assert config["model_kwargs"]["frames"] == 8 and config["data"]["name"] == "moving-digits"


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
