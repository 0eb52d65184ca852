"""Rectified-flow objective: interpolation, velocity target, timestep distributions, loss mask."""

import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.flow.loss import interpolate, masked_mse, rectified_flow_loss, sample_timesteps


def test_interpolation_runs_from_noise_to_data():
    x1, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(interpolate(x1, noise, torch.zeros(3)), noise)
    torch.testing.assert_close(interpolate(x1, noise, torch.ones(3)), x1)
    torch.testing.assert_close(interpolate(x1, noise, torch.full((3,), 0.25)), 0.75 * noise + 0.25 * x1)


def test_loss_is_zero_for_the_true_velocity():
    x1, noise, t = torch.randn(4, 2, 3, 4, 4), torch.randn(4, 2, 3, 4, 4), torch.rand(4)  # video-shaped

    def oracle(xt, tt, y):  # recovers x1 - noise from x_t exactly
        return (x1 - xt) / (1 - tt.view(-1, 1, 1, 1, 1))

    assert rectified_flow_loss(oracle, x1, torch.zeros(4), t, noise).item() == pytest.approx(0, abs=1e-8)
    zero = lambda xt, tt, y: torch.zeros_like(xt)
    expected = (x1 - noise).square().mean()
    torch.testing.assert_close(rectified_flow_loss(zero, x1, torch.zeros(4), t, noise), expected)


def test_timestep_distributions():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(200_000, "logit_normal", generator=g)
    logit = torch.log(t / (1 - t))
    assert 0 < t.min() and t.max() < 1
    assert logit.mean().item() == pytest.approx(0, abs=0.01) and logit.std().item() == pytest.approx(1, abs=0.01)
    shifted = sample_timesteps(200_000, "logit_normal", mean=0.5, std=2.0, generator=g)
    assert torch.log(shifted / (1 - shifted)).std().item() == pytest.approx(2, abs=0.02)
    u = sample_timesteps(200_000, "uniform", generator=g)
    assert u.mean().item() == pytest.approx(0.5, abs=0.005) and u.var().item() == pytest.approx(1 / 12, abs=0.002)
    with pytest.raises(UserError, match="timestep distribution"):
        sample_timesteps(4, "cosine")


def test_mask_ignores_the_padding():
    target = torch.zeros(2, 1, 4, 4)
    pred = torch.zeros(2, 1, 4, 4)
    pred[..., :2, :] = 3.0  # error only in the top half
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:, :] = 1  # loss counts on the bottom half only
    assert masked_mse(pred, target, mask).item() == 0
    mask[..., 1, :] = 1  # one errored row now counts: 4 of 12 masked elements, each error 9
    assert masked_mse(pred, target, mask).item() == pytest.approx(3.0)
    assert masked_mse(pred, target).item() == pytest.approx(4.5)
