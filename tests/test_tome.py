"""ToMe (models/tome.py): neutral at ratio 0, measured FLOPs equal macs(), the most similar pairs merge,
unmerge copies, only ELIT's spatial blocks merge, bad settings are one-line errors."""

import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.flops import forward_flops, measure_forward_flops
from elit_bench.models.layers import rope_tables
from elit_bench.models.layout import Grid
from elit_bench.models.tome import Merge, apply_tome, partition, tome_ratio
from helpers import randomize, tiny


def inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_channels, *model.input_shape, generator=g)
    return x, torch.rand(batch, generator=g), torch.randint(model.num_classes, (batch,), generator=g)


@pytest.mark.parametrize("name, kw, budget", [("DiT-S/2", {}, None), ("ELIT-DiT-S/2", {"group_size": 4}, 3)])
def test_ratio_zero_is_the_base_model(name, kw, budget):
    # catches: a hook that changes the block when off, or apply_tome(model, 0) leaving hooks behind
    model = randomize(tiny(name, **kw))
    x, t, y = inputs(model)
    with torch.no_grad():
        base = model(x, t, y, budget=budget)
        assert torch.equal(apply_tome(model, 0)(x, t, y, budget=budget), base)
        assert not torch.equal(apply_tome(model, 0.5)(x, t, y, budget=budget), base)  # it does merge
        assert tome_ratio(model) == 0.5
        # 64 tokens at ratio 0.01 merge int(0.64) = 0 tokens: the blocks run unmerged
        assert torch.equal(apply_tome(model, 0.01)(x, t, y, budget=budget), base)
        assert torch.equal(apply_tome(model, 0)(x, t, y, budget=budget), base)
    assert tome_ratio(model) == 0.0


CASES = [("DiT-S/2", {}, [None], None), ("UViT-S/2", {}, [None], None), ("HDiT-S/2", {}, [None], None),
         ("MultiPatch-DiT-S/2", {}, [None], 4), ("ELIT-DiT-S/2", {"group_size": 4}, [None, 3], None)]


@pytest.mark.parametrize("name, kw, budgets, patch", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("ratio, merge_mlp", [(0.25, False), (0.5, True), (0.75, False)])
def test_measured_flops_equal_macs(name, kw, budgets, patch, ratio, merge_mlp):
    # catches: a sublayer counted at the wrong token count, the matching left out, a block that
    # merges in the forward but not in macs() (or the reverse)
    model = apply_tome(tiny(name, **kw), ratio, merge_mlp=merge_mlp)
    for budget in budgets:
        extra = {} if patch is None else {"patch_size": patch}
        analytic = forward_flops(model, budget, **extra)
        assert measure_forward_flops(model, budget, batch=2, **extra) == analytic, (name, budget)
        apply_tome(model, 0)
        assert analytic < forward_flops(model, budget, **extra)
        apply_tome(model, ratio, merge_mlp=merge_mlp)


def test_dit_block_count_is_attention_at_the_merged_count_plus_matching():
    # catches: a change of what ToMe's FLOPs count (merged tokens r = int(ratio * L), matching src x dst x d)
    model = tiny("DiT-S/2")  # 8x8 = 64 tokens, width 64, depth 6
    base = forward_flops(model)
    attn = model.blocks[0].attn
    saved = attn.macs(64) - attn.macs(64 - 32) - 48 * 16 * 64
    assert forward_flops(apply_tome(model, 0.5)) == base - 2 * 6 * saved


def test_elit_merges_its_spatial_head_and_tail_only():
    # catches: ToMe merging the latents of the core (the choice is: spatial tokens only, see tome.py)
    model = apply_tome(tiny("ELIT-DiT-S/2", group_size=4), 0.5)
    b_in, b_core, b_out = model.blocks
    assert [b.token_merge is not None for b in model.backbone.blocks] == [True] * b_in + [False] * b_core + [True] * b_out
    saved = {}
    for budget in (None, 3):
        on = forward_flops(model, budget)
        apply_tome(model, 0)
        saved[budget] = forward_flops(model, budget) - on
        apply_tome(model, 0.5)
    assert saved[None] == saved[3] > 0  # the core's cost, which the budget sets, is untouched


def test_merges_the_most_similar_pairs_and_unmerge_copies():
    # a 4x4 grid; dst = the top-left token of each 2x2 window: 0, 2, 8, 10
    grid = Grid((4, 4))
    dst, src = (t[0] for t in partition(grid, 1, None, torch.device("cpu")))
    assert dst.tolist() == [0, 2, 8, 10] and len(src) == 12
    # orthogonal tokens, except three src tokens made close to a dst: 5 -> 0 (cos 0.995),
    # 15 -> 8 (0.958, outside its own window: the matching is global), 1 -> 2 (0.857, the third best)
    x = torch.eye(16)
    x[5] = x[0] + 0.1 * x[5]
    x[15] = x[8] + 0.3 * x[15]
    x[1] = x[2] + 0.6 * x[1]
    x = x.unsqueeze(0)
    rope = rope_tables(grid.positions(), 8)
    merge = Merge.match(x, dst, src, 2, rope)
    row = merge.row[0]
    assert row[5] == row[0] and row[15] == row[8]
    assert len(set(row.tolist())) == 14  # every other token is alone
    h = torch.randn(1, 16, 3)
    merged = merge.merge(h)
    assert merged.shape == (1, 14, 3)
    torch.testing.assert_close(merged[0, row[0]], (h[0, 0] + h[0, 5]) / 2)
    back = merge.unmerge(merged)
    assert back.shape == h.shape
    assert torch.equal(back[0, 5], back[0, 0]) and torch.equal(back[0, 15], back[0, 8])
    alone = [i for i in range(16) if i not in (0, 5, 8, 15)]
    assert torch.equal(back[0, alone], h[0, alone])
    # a merged token attends with its dst token's RoPE phase
    assert torch.equal(merge.rope[0][0, 0, row[5]], rope[0][0])
    assert torch.equal(merge.rope[1][0, 0, row[15]], rope[1][8])
    # r = 3 takes the next most similar pair too
    row3 = Merge.match(x, dst, src, 3).row[0]
    assert row3[1] == row3[2] and len(set(row3.tolist())) == 13


def test_dst_draw_one_per_window_per_block_from_the_seed():
    # catches: a window with no or two dst tokens, the same draw for every block, a seed that does not reproduce
    grid = Grid((4, 4))
    cpu = torch.device("cpu")
    dst, src = partition(grid, 6, 0, cpu)
    owner = torch.empty(16, dtype=torch.long)
    owner[grid.merge_index().flatten()] = torch.arange(4).repeat_interleave(4)
    for i in range(6):
        assert sorted(owner[dst[i]].tolist()) == [0, 1, 2, 3]
        assert sorted(dst[i].tolist() + src[i].tolist()) == list(range(16))
    assert len({tuple(d.tolist()) for d in dst}) > 1
    assert torch.equal(partition(grid, 6, 0, cpu)[0], dst) and not torch.equal(partition(grid, 6, 1, cpu)[0], dst)


def test_a_sample_merges_the_same_alone_or_in_a_batch():
    # catches: a matching that mixes the samples of a batch (each sample merges its own tokens)
    model = apply_tome(randomize(tiny("DiT-S/2")), 0.5)
    x, t, y = inputs(model, batch=3)
    with torch.no_grad():
        together = model(x, t, y)
        alone = model(x[1:2], t[1:2], y[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ratio", [-0.1, 0.8, True, "0.5", float("nan"), None])
def test_bad_ratio_is_one_line(ratio):
    with pytest.raises(UserError, match="ToMe ratio") as err:
        apply_tome(tiny("DiT-S/2"), ratio)
    assert "\n" not in str(err.value)


def test_bad_settings_are_one_line():
    with pytest.raises(UserError, match="merges nothing"):
        apply_tome(tiny("DiT-S/2"), 0.5, merge_attn=False)
    with pytest.raises(UserError, match="even token grid"):
        apply_tome(tiny("DiT-S/2", input_size=18), 0.5)  # 9x9 tokens: no 2x2 windows
    with pytest.raises(UserError, match="backbones"):
        apply_tome(torch.nn.Linear(2, 2), 0.5)
    model = apply_tome(tiny("DiT-S/2"), 0.5)
    x = torch.randn(1, 1, 32, 32)  # 16x16 tokens, not the 8x8 it was set up for
    with pytest.raises(UserError, match="input_shape"):
        model(x, torch.rand(1), torch.zeros(1, dtype=torch.long))


def test_a_tome_model_compiles_in_one_graph():
    # catches: a hook that makes its tables inside the compiled pass (a graph break, or a host copy per call)
    from elit_bench.models.compile import compile_model

    model = apply_tome(randomize(tiny("DiT-S/2")), 0.5)
    x, t, y = inputs(model)
    with torch.no_grad():
        eager = model(x, t, y)
        compile_model(model, 1, backend="eager")  # fullgraph: a graph break raises
        assert torch.equal(model(x, t, y), eager)


def test_the_sample_option_merges_records_and_prices_it(tmp_path, capsys):
    # catches: `sample.tome` / --tome not reaching the model, FLOPs priced without the merge, a set's settings
    # without the ratio (a rerun at another ratio would reuse the samples)
    import json

    from elit_bench.checkpoint import save_checkpoint
    from elit_bench.cli import main
    from elit_bench.sampling.generate import prepare
    from elit_bench.schema import SampleSettings, check

    model = randomize(tiny("DiT-S/2"))
    sd = model.state_dict()
    data = {"name": "digits", "kind": "pixels", "resolution": 16, "channels": 1, "num_classes": 10, "frames": None,
            "crop": None, "autoencoder": None}
    kwargs = dict(input_size=16, in_channels=1, num_classes=10, hidden_size=64, depth=6, num_heads=4)  # tiny()'s
    ckpt = tmp_path / "dit.pt"
    save_checkpoint(ckpt, {"model": sd, "ema": sd, "step": 0,
                           "config": {"model": "DiT-S/2", "model_kwargs": kwargs, "data": data}})
    args = ["sample", str(ckpt), "--num", "2", "--steps", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "base")]) == 0
    assert main([*args, "--out", str(tmp_path / "tome"), "--tome", "0.5"]) == 0
    base, merged = (json.loads((tmp_path / d / "samples.json").read_text()) for d in ("base", "tome"))
    assert merged["tome_ratio"] == 0.5 and merged["settings"]["tome"] == 0.5 and base["tome_ratio"] is None
    assert merged["flops_per_sample"] == 3 * forward_flops(apply_tome(model, 0.5)) < base["flops_per_sample"]
    assert main([*args, "--out", str(tmp_path / "bad"), "--tome", "0.9"]) == 2
    assert "ToMe ratio 0.9" in capsys.readouterr().err
    recipe = check("sample", SampleSettings, {"tome": 0.25}).recipe(None)  # a suite's option plans on the meta device
    with torch.device("meta"):
        meta = tiny("DiT-S/2")
    assert prepare(meta, recipe).flops_per_sample == 40 * forward_flops(apply_tome(meta, 0.25))
