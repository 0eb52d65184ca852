"""MM-DiT (Qwen-Image's layout) and ELIT on its image stream: shapes, budgets, text conditioning, guidance, FLOPs."""

import csv

import pytest
import torch

from elit_bench.baselines import baseline_file
from elit_bench.errors import UserError
from elit_bench.flops import MMDIT_GUIDE_KEEP, forward_flops, measure_forward_flops
from elit_bench.flow.guidance import Guidance, GuidedVelocity, build_plan, plan_flops
from elit_bench.flow.sampling import time_grid
from elit_bench.models import create_model, param_count, resize_model
from elit_bench.models.mmdit import MMDiT, TextCondition
from elit_bench.models.tome import apply_tome
from helpers import randomize

TEXT_DIM, TEXT_TOKENS, PROMPTS = 16, 5, 10


def tiny(name="ELIT-MMDiT-S/2", **kw):
    """8x8 image tokens of 4 channels, width 64 (4 heads of 16), depth 4; ELIT: 16 groups of 2x2, J = 4,
    blocks 1-2-1."""
    args = dict(input_size=16, in_channels=4, num_classes=PROMPTS, hidden_size=64, depth=4, num_heads=4,
                text_dim=TEXT_DIM, text_tokens=TEXT_TOKENS)
    return create_model(name, **{**args, **kw})


def inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_channels, *model.input_shape, generator=g)
    return x, torch.rand(batch, generator=g), torch.arange(batch) % model.num_classes


def test_every_budget_and_drop_keeps_shape_and_changes_compute():
    # catches: a budget that does not reach the latent core (same output, same FLOPs at every budget), random
    # dropping that ignores the caller's generators, a budget outside 1..J accepted
    model = randomize(tiny()).eval()
    x, t, y = inputs(model)
    assert model.max_budget == 4 and model.blocks == (1, 2, 1)
    with torch.no_grad():
        outs = {b: model(x, t, y, budget=b) for b in (1, 2, 3, 4)}
    assert all(o.shape == x.shape and torch.isfinite(o).all() for o in outs.values())
    assert not torch.allclose(outs[1], outs[4], atol=1e-5)
    assert [forward_flops(model, b) for b in (1, 2, 3, 4)] == sorted({forward_flops(model, b) for b in (1, 2, 3, 4)})
    assert torch.equal(model(x, t, y).detach(), outs[4])

    rand = randomize(tiny(drop="random")).eval()
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6)]  # noqa: E731
    with torch.no_grad():
        a, b = rand(x, t, y, budget=2, generator=gens()), rand(x, t, y, budget=2, generator=gens())
        tail = tiny().eval()
        tail.load_state_dict(rand.state_dict())
        tail = tail(x, t, y, budget=2)
        alone = rand(x[1:], t[1:], y[1:], budget=2, generator=gens()[1:])  # a sample's draw is its own
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, tail, atol=1e-5)
    assert torch.allclose(a[1:], alone, atol=1e-5)
    with pytest.raises(UserError, match="outside 1..4"):
        model(x, t, y, budget=5)


def test_text_conditioning_prompt_ids_and_text_agree_and_padding_is_ignored():
    # catches: text not wired into the image stream, the prompt table and per-sample text taking different paths,
    # a mask that does not reach the joint attention (padding changes the output), set_prompts not loading
    model = randomize(tiny("MMDiT-S/2")).eval()
    x, t, _ = inputs(model)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(PROMPTS + 1, TEXT_TOKENS - 1, TEXT_DIM, generator=g)  # shorter than the table: padded
    mask = torch.ones(PROMPTS + 1, TEXT_TOKENS - 1, dtype=torch.bool)
    mask[3, 2:] = False  # prompt 3 has 2 tokens
    mask[-1] = False  # the empty prompt
    model.set_prompts(tokens, mask)
    y = torch.tensor([3, PROMPTS])  # prompt 3 and the null (empty) prompt
    with torch.no_grad():
        by_id = model(x, t, y)
        padded = torch.cat([tokens[y], torch.zeros(2, 1, TEXT_DIM)], dim=1)
        by_text = model(x, t, TextCondition(padded, torch.cat([mask[y], torch.zeros(2, 1, dtype=torch.bool)], 1)))
        junk = padded.clone()
        junk[0, 2:] = 50.0  # prompt 3's padding
        junk[1] = -7.0  # all of the empty prompt is padding
        by_junk = model(x, t, TextCondition(junk, torch.cat([mask[y], torch.zeros(2, 1, dtype=torch.bool)], 1)))
        other = model(x, t, torch.tensor([4, 4]))
        unmasked = model(x, t, TextCondition(junk))
    assert torch.allclose(by_id, by_text, atol=1e-6)
    assert torch.allclose(by_id, by_junk, atol=1e-6)
    assert not torch.allclose(by_id[0], other[0], atol=1e-4)  # another prompt, another velocity
    assert not torch.allclose(by_id, unmasked, atol=1e-4)  # without the mask the padding is read


@pytest.mark.parametrize("name", ["MMDiT-S/2", "ELIT-MMDiT-S/2"])
def test_forward_backward_reaches_every_parameter(name):
    # catches: a parameter no loss reaches (DDP without find_unused_parameters fails on it: e.g. the last
    # block's text output projection and MLP, whose output nothing reads), a non-finite gradient
    model = randomize(tiny(name)).train()
    x, t, y = inputs(model)
    model(x, t, y, **({"budget": 3} if model.max_budget else {})).square().mean().backward()
    reached = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached == {n for n, _ in model.named_parameters()}
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_activation_checkpointing_gives_the_same_gradients():
    # catches: a checkpointed block that drops the text stream, its mask or its RoPE tables
    model = randomize(tiny()).train()
    x, t, y = inputs(model)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad(set_to_none=True)
        model.backbone.checkpoint_blocks = checkpointing
        model(x, t, y, budget=2).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_cfg_and_ccfg_guide_with_the_empty_prompt():
    # catches: a null condition other than the empty prompt, CCFG's guide pass at the main budget, a plan priced
    # with other passes than it runs
    model = randomize(tiny()).eval()
    x, t, y = inputs(model)
    scale, times = 1.5, time_grid(4)
    null = torch.full_like(y, model.num_classes)
    for mode, guide_budget in (("cfg", None), ("ccfg", 1)):
        for budget in (1, 4):
            plan = build_plan(model, times, "euler", [budget] * 4, Guidance(mode, scale, guide_budget))
            with torch.no_grad():
                v = GuidedVelocity(model, y, plan, scale)(x, times[0], 0)
                tt = torch.full((2,), times[0])
                main, guide = model(x, tt, y, budget), model(x, tt, null, guide_budget or budget)
            assert torch.allclose(v, main + scale * (main - guide), atol=1e-6), (mode, budget)
            passes = forward_flops(model, budget) + forward_flops(model, guide_budget or budget)
            assert plan_flops(model, plan) == 4 * passes


@pytest.mark.parametrize("name, budgets", [("MMDiT-S/2", [None]), ("ELIT-MMDiT-S/2", [None, 1, 3])])
def test_measured_flops_equal_macs_on_cpu(name, budgets):
    # catches: a block, stream, text embedding, Read or Write computed but not counted (or counted but not run),
    # the joint attention counted over image tokens only, the masked SDPA kernel not counted
    model = tiny(name)
    for budget in budgets:
        assert measure_forward_flops(model, budget, batch=2) == forward_flops(model, budget), budget


def test_the_last_block_has_no_text_output():
    model = tiny("MMDiT-S/2")
    assert [b.txt.output for b in model.blocks] == [True, True, True, False]
    assert not hasattr(model.blocks[-1].txt, "mlp") and model.blocks[-1].txt.adaLN_modulation[1].out_features == 2 * 64


# ---------------------------------------------------------------- starting from the teacher
def without_core(teacher, x, t, y, core: range):
    """The teacher's forward with its image stream skipping the blocks of `core` (the text skips them too)."""
    state = dict(teacher.plan(x))
    h, c = teacher.embed(x, t, y, state)
    h, _ = teacher.run_blocks(h, c, state["grid"], 0, core.start, state)
    h, _ = teacher.run_blocks(h, c, state["grid"], core.stop, teacher.depth, state)
    return teacher.unembed(h, c, state)


def test_elit_at_init_is_the_teacher_without_its_core():
    """A zero-initialised Write returns its queries: the image stream leaving it is the head's output plus the
    Read and Write position embeddings, whatever the core computed. So ELIT initialised from a teacher starts as
    the teacher with the core blocks cut out of the image stream, not as the teacher; exactly so where the image
    stream cannot read the text (the empty prompt: all padding) and the position embeddings are zero. With a
    prompt the core still reaches the output: text tokens attend to latents in the core, image tokens to the
    text in the tail (docs/mmdit.md)."""
    # catches: a Write that is not zero-initialised, a core that leaks into the image stream another way, a Read
    # or Write that reads the text stream, the teacher's weights not fitting ELIT's backbone
    teacher = randomize(tiny("MMDiT-S/2")).eval()
    student = tiny().eval()
    student.backbone.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        student.interface.read_pos.zero_()
        student.interface.write_pos.zero_()
        student.interface.read.adaLN_modulation[1].weight.normal_()  # the core sees non-trivial latents
    x, t, _ = inputs(teacher)
    empty, prompt = torch.full((2,), PROMPTS), torch.tensor([2, 7])
    b_in, b_core, _ = student.blocks
    with torch.no_grad():
        want = without_core(teacher, x, t, empty, range(b_in, b_in + b_core))
        assert not torch.allclose(want, teacher(x, t, empty), atol=1e-4)  # the core blocks matter to the teacher
        for budget in (1, 2, 4):
            assert torch.allclose(student(x, t, empty, budget=budget), want, atol=1e-5), budget
        with_prompt = without_core(teacher, x, t, prompt, range(b_in, b_in + b_core))
        assert not torch.allclose(student(x, t, prompt), with_prompt, atol=1e-4)


# ---------------------------------------------------------------- Qwen-Image layout and Table 4
@pytest.fixture(scope="module")
def qwen_image():
    with torch.device("meta"):
        return (create_model("MMDiT-QwenImage/2", resolution=1024),
                create_model("ELIT-MMDiT-QwenImage/2", resolution=1024))


def test_qwen_image_layout(qwen_image):
    # catches: a preset that is not Qwen-Image's (block count, widths, heads, RoPE split, text width, Read/Write)
    teacher, elit = qwen_image
    block = teacher.blocks[0]
    assert (teacher.depth, teacher.hidden_size, teacher.num_heads, teacher.head_dim) == (60, 3072, 24, 128)
    assert teacher.rope_axes == (16, 56, 56) and block.img.mlp.fc1.out_features == 4 * 3072
    assert teacher.text_embedder.proj.in_features == 3584 and teacher.patch_embedders[0].proj.in_features == 64
    assert param_count(teacher) / 1e9 == pytest.approx(20.3, abs=0.1)  # Qwen-Image: "20B" (its release: 20.4B)
    assert elit.blocks == (8, 44, 8) and elit.max_budget == 256  # Read after block 8, Write before 52; 16 groups
    assert resize_model("ELIT-MMDiT-QwenImage/2", "S") == "ELIT-MMDiT-S/2"


def table4_rows():
    with open(baseline_file("table4_mmdit_flops.csv"), newline="") as f:
        return [(float(r["tokens_pct"]), float(r["flops_ratio"])) for r in csv.DictReader(f)]


def table4_ratios(count, teacher, elit):
    """{tokens %: (ours, paper)}: ELIT sampling FLOPs with CCFG (main pass at the row's tokens, guide pass at J/16,
    the guide budget `MMDIT_GUIDE_KEEP`) over the teacher with CFG; count(model, budget) -> forward FLOPs."""
    J = elit.max_budget
    guide, full = count(elit, round(J * MMDIT_GUIDE_KEEP)), count(teacher, None)
    return {pct: ((count(elit, round(J * pct / 100)) + guide) / (2 * full), paper) for pct, paper in table4_rows()}


def test_table4_sampling_flops_ratios_analytic(qwen_image):
    """Table 4 (1024 px, ~300 text tokens) from this module's `macs()` at Qwen-Image's layout."""
    # catches: a block, stream or interface count off by more than the rows' 1%: text tokens left out of the
    # joint attention, the core at the wrong token count, Read/Write at the wrong blocks
    ratios = table4_ratios(lambda m, b: forward_flops(m, b), *qwen_image)
    assert list(ratios) == [100, 50, 25, 12.5]
    for pct, (ours, paper) in ratios.items():
        assert ours == pytest.approx(paper, rel=0.01), pct


@pytest.mark.slow  # six counted forwards of a 60-block model on the meta device: ~30 s on a loaded 2-core machine
def test_table4_sampling_flops_ratios_measured(qwen_image):
    """Table 4 from FlopCounterMode on this module's forward (meta device), equal to the analytic count."""
    # catches: an analytic count that agrees with the paper but not with what the forward runs
    measured = {}

    def count(model, budget):
        measured[model, budget] = measure_forward_flops(model, budget, device="meta")
        assert measured[model, budget] == forward_flops(model, budget), budget
        return measured[model, budget]
    for pct, (ours, paper) in table4_ratios(count, *qwen_image).items():
        assert ours == pytest.approx(paper, rel=0.01), pct


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda m, x, t, y: m(x[:, :3], t, y), "expected input"),
    (lambda m, x, t, y: m(x[..., :15], t, y), "not divisible by patch size"),
    (lambda m, x, t, y: m(x, t, TextCondition(torch.zeros(2, 3, TEXT_DIM + 1))), "text tokens must be"),
    (lambda m, x, t, y: m(x, t, TextCondition(torch.zeros(2, 3, TEXT_DIM), torch.ones(2, 3))),
     "text mask must be bool"),
    (lambda m, x, t, y: m.set_prompts(torch.zeros(PROMPTS, 2, TEXT_DIM), torch.ones(PROMPTS, 2, dtype=torch.bool)),
     "do not fit this model's prompt table"),
    (lambda m, x, t, y: tiny("MMDiT-S/2", rope_axes=(4, 6, 8)), "RoPE axes"),
    (lambda m, x, t, y: tiny("MMDiT-S/2", group_size=2), "only apply to ELIT models"),
])
def test_bad_input_is_one_user_error(call, match):
    model = tiny("MMDiT-S/2")
    with pytest.raises(UserError, match=match) as err:
        call(model, *inputs(model))
    assert "\n" not in str(err.value)


def test_mmdit_is_a_backbone_elit_wraps():
    # catches: the MM-DiT forgetting TaylorSeer's guard (its blocks are not DiT blocks), through ELIT too
    assert isinstance(tiny("MMDiT-S/2"), MMDiT)
    assert not tiny("MMDiT-S/2").runs_dit_blocks and not tiny().runs_dit_blocks


@pytest.mark.parametrize("name", ["MMDiT-S/2", "ELIT-MMDiT-S/2"])
def test_tome_refuses_an_mmdit_with_one_line(name):
    # ToMe merges the tokens of DiT blocks; a double-stream block would be hooked wrongly, so it must say so
    with pytest.raises(UserError, match="ToMe applies to") as err:
        apply_tome(tiny(name), 0.25)
    assert "\n" not in str(err.value)
