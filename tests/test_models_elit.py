"""ELIT behaviour: tail vs random dropping, Write sees only kept latents, gradients reach every parameter,
and the grouped attention equals a masked full attention (the reference it replaces)."""

import pytest
import torch
import torch.nn.functional as F

from elit_bench.models.elit import from_groups, to_groups
from elit_bench.models.layers import Attention
from elit_bench.models.layout import Grid
from helpers import randomize, tiny


def batch(model, n=2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, model.in_channels, *model.input_shape, generator=g)
    return x, torch.rand(n, generator=g), torch.arange(n) % model.num_classes


@pytest.mark.parametrize("name", ["ELIT-DiT-S/2", "ELIT-UViT-S/2", "ELIT-HDiT-S/2"])
def test_tail_dropping_ignores_latents_beyond_budget(name):
    model = randomize(tiny(name, group_size=4)).eval()
    x, t, y = batch(model)
    budget = 6
    before = model(x, t, y, budget=budget)
    full_before = model(x, t, y)
    with torch.no_grad():
        model.interface.latent_embed[budget:] += torch.randn_like(model.interface.latent_embed[budget:])
    torch.testing.assert_close(model(x, t, y, budget=budget), before, rtol=0, atol=0)
    assert not torch.allclose(model(x, t, y), full_before)  # the perturbation is visible at full budget


def test_random_dropping_depends_on_every_latent():
    model = randomize(tiny("ELIT-DiT-S/2", group_size=4, drop="random")).eval()
    x, t, y = batch(model)
    budget = 6
    before = model(x, t, y, budget=budget, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.interface.latent_embed[budget:] += torch.randn_like(model.interface.latent_embed[budget:])
    after = model(x, t, y, budget=budget, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(after, before)


def test_random_dropping_is_reproducible_with_a_generator():
    model = randomize(tiny("ELIT-DiT-S/2", group_size=4, drop="random")).eval()
    x, t, y = batch(model)
    a = model(x, t, y, budget=5, generator=torch.Generator().manual_seed(7))
    b = model(x, t, y, budget=5, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name, kw", [
    ("ELIT-DiT-S/2", {}), ("ELIT-UViT-S/2", {}), ("ELIT-HDiT-S/2", {}), ("DiT-S/2", {}), ("UViT-S/2", {}),
    ("HDiT-S/2", {}), ("ELIT-DiT-S/2", {"read": "qformer"}), ("ELIT-DiT-S/2", {"read": "self", "write": "self"}),
    ("ELIT-DiT-S/2", {"read_depth": 2, "write_depth": 2, "interface_mlp_ratio": 4}),
    ("ELIT-DiT-S/2", {"pos_embed": "learned"}),
])
def test_one_backward_reaches_every_parameter(name, kw):
    # catches: a parameter no forward path uses (an unused Read/Write sublayer, a latent embedding never read)
    model = randomize(tiny(name, **kw))
    x, t, y = batch(model)
    model(x, t, y).square().mean().backward()
    orphans = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert orphans == []


def test_multipatch_leaves_only_the_other_patchifier_without_gradient():
    """(Replaces a dead `"MultiPatch" not in name` branch: no case above was a multi-patch model.)"""
    # catches: a multi-patch model whose patchifiers share weights, or whose trunk skips one patchifier's path
    model = randomize(tiny("MultiPatch-DiT-S/2"))
    x, t, y = batch(model)
    orphans = {}
    for p in model.patch_options:
        model.zero_grad(set_to_none=True)
        model(x, t, y, patch_size=p).square().mean().backward()
        orphans[p] = {n for n, q in model.named_parameters() if q.grad is None or not q.grad.abs().sum() > 0}
    small, large = model.patch_options
    assert orphans[small] and orphans[large] and not orphans[small] & orphans[large]
    # what one patchifier leaves untouched is exactly what the other one owns
    owned = {n for n, _ in model.named_parameters()} - orphans[small] - orphans[large]
    assert len(owned) > len(orphans[small]) + len(orphans[large])  # the shared trunk is most of the model


@pytest.mark.parametrize("name", ["ELIT-DiT-S/2", "ELIT-UViT-S/2"])
def test_core_and_write_see_only_the_kept_latents(name):
    """Paper Sec. 3.4: "In every Read/Write and latent-core block, keep only the first J~ latents of each group"."""
    # catches: a Write (or a core block) that still gets all J latents per group at a budget J~ < J, e.g. dropped
    # latents restored before the Write as the released code does
    model = randomize(tiny(name, group_size=4)).eval()  # 4 groups, J = 16
    x, t, y = batch(model)
    seen = {}
    hooks = [model.interface.write.register_forward_pre_hook(lambda m, args: seen.__setitem__("write", args[1].shape))]
    b_in, b_core, _ = model.blocks
    for i in (b_in, b_in + b_core - 1):  # first and last core block
        hooks.append(model.backbone.blocks[i].register_forward_pre_hook(
            lambda m, args, i=i: seen.__setitem__(i, args[0].shape)))
    for budget in (1, 5, 16):
        with torch.no_grad():
            model(x, t, y, budget=budget)
        assert seen["write"][:2] == (len(x) * 4, budget), budget  # (B * G, J~) keys and values per group
        assert seen[b_in][1] == seen[b_in + b_core - 1][1] == 4 * budget, budget  # G * J~ tokens in the core
    for h in hooks:
        h.remove()


def test_grouped_cross_attention_equals_block_masked_full_attention():
    torch.manual_seed(0)
    grid, group = Grid((4, 6)), (2, 3)
    attn = Attention(32, 4, cross=True)
    s = torch.randn(1, 24, 32)
    latents = torch.randn(4, 3, 32)  # 4 groups, 3 latents each
    grouped = attn(latents, to_groups(s, grid, group)).reshape(1, 12, 32)
    # reference: all 12 latents attend to all 24 tokens, masked to their own group
    group_of_token = torch.arange(24).view(2, 2, 2, 3).permute(0, 2, 1, 3).reshape(-1)  # raster -> group id
    token_group = torch.empty(24, dtype=torch.long)
    token_group[group_of_token] = torch.arange(4).repeat_interleave(6)
    latent_group = torch.arange(4).repeat_interleave(3)
    mask = latent_group[:, None] == token_group[None, :]
    heads = lambda z: z.unflatten(-1, (4, 8)).transpose(1, 2)
    q = attn.q_norm(heads(attn.q(latents.reshape(1, 12, 32))))
    k, v = (heads(z) for z in attn.kv(s).chunk(2, dim=-1))
    ref = attn.proj(F.scaled_dot_product_attention(q, attn.k_norm(k), v, attn_mask=mask).transpose(1, 2).flatten(2))
    torch.testing.assert_close(grouped, ref, rtol=1e-5, atol=1e-5)


def test_groups_round_trip_2d_and_3d():
    for grid, group in ((Grid((8, 12)), (4, 3)), (Grid((4, 8, 8)), (2, 4, 4))):
        x = torch.randn(3, grid.num_tokens, 5)
        torch.testing.assert_close(from_groups(to_groups(x, grid, group), grid, group), x, rtol=0, atol=0)
        g = to_groups(x, grid, group)
        # the first group holds the top-left window
        assert torch.equal(g[0, 0], x[0, 0])


def test_latents_carry_their_group_rope_phase():
    from elit_bench.models.layout import LatentSet

    layout = LatentSet(Grid((2, 2), (4, 4)), 3)
    pos = layout.positions()
    assert pos.shape == (12, 2)
    torch.testing.assert_close(pos[:3], torch.tensor([[1.5, 1.5]] * 3))  # centre of tokens 0..3
    torch.testing.assert_close(pos[-1], torch.tensor([5.5, 5.5]))


def test_random_dropping_with_one_generator_per_sample_is_batch_independent():
    model = randomize(tiny("ELIT-DiT-S/2", group_size=4, drop="random")).eval()
    x, t, y = batch(model, n=3)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (10, 11, 12)]
    together = model(x, t, y, budget=5, generator=gens())
    alone = torch.cat([model(x[i:i + 1], t[i:i + 1], y[i:i + 1], budget=5, generator=[g])
                       for i, g in enumerate(gens())])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
