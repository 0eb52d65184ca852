"""Equivalence to the released code: the official ELIT-SiT / SiT models (../shared/oracle/, test oracles only)
against the harness's `ELIT-SiT-*` / `SiT-*` after `elit-bench convert`.

Every parameter of the official model is randomised from a seed first, so zero-initialised layers
(Write, adaLN, the final layer) cannot hide a difference. The official convention is t = 1 at noise and
v = noise - data; ours is t = 0 at noise and v = data - noise:
    ours(x, t, y, budget=J) == -official(x, 1 - t, y, inference_budget=J / J_max)[0]
The oracle is found at $ELIT_BENCH_ORACLE or shared/oracle beside the repository (or a parent); when missing
the tests skip, unless ELIT_BENCH_REQUIRE_ORACLE=1 (set by .ci/run), where they fail.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from elit_bench.checkpoint import load_checkpoint
from elit_bench.cli import main as cli
from elit_bench.flops import forward_flops
from elit_bench.flow.guidance import Guidance, GuidedVelocity, build_plan, guidance_flops_ratio
from elit_bench.flow.sampling import solve, time_grid
from elit_bench.metrics.weights import file_sha256
from elit_bench.models import create_model, model_from_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _find_oracle() -> Path:
    """$ELIT_BENCH_ORACLE, else the first shared/oracle beside the repository or one of its parents."""
    if os.environ.get("ELIT_BENCH_ORACLE"):
        return Path(os.environ["ELIT_BENCH_ORACLE"])
    candidates = [parent / "shared" / "oracle" for parent in REPO.parents]
    return next((c for c in candidates if c.is_dir()), candidates[0])


ORACLE = _find_oracle()


def _require_oracle():
    if not (ORACLE / "elit-official" / "models" / "sit_elit.py").is_file():
        message = f"the official code is not at {ORACLE} (set ELIT_BENCH_ORACLE to its folder)"
        if os.environ.get("ELIT_BENCH_REQUIRE_ORACLE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("timm")
    pytest.importorskip("einops")


@pytest.fixture(scope="module")
def oracle():
    """The official modules: ELIT's SiT/ELIT-SiT (package `models`, `elit_utils`), its sampler, willisma/SiT."""
    _require_oracle()
    root = str(ORACLE / "elit-official")
    sys.path.insert(0, root)  # its files import `models.sit` and `elit_utils.*`, also lazily in __init__
    from models.sit import SiT_models as elit_sit
    from models.sit_elit import SiT_models as elit_models
    from samplers import euler_sampler
    spec = importlib.util.spec_from_file_location("sit_official_models", ORACLE / "sit-official" / "models.py")
    willisma = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(willisma)
    yield argparse.Namespace(elit=elit_models, sit=elit_sit, willisma=willisma.SiT_models, euler=euler_sampler)
    sys.path.remove(root)


# Weights at gain 0.3: every layer contributes, yet float32 rounding is not amplified past 1e-5 (at gain 1
# the two models agree to 4e-14 in float64 but only to 2e-3 in float32: a chaotic random network)
GAIN = 0.3


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every trainable parameter drawn from a seed (norm scales near 1), so no layer is the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:  # the fixed sin-cos table
                continue
            noise = torch.randn(p.shape, generator=g)
            if name.endswith(("scale", "q_norm.weight", "k_norm.weight")):
                p.copy_(1 + 0.1 * noise)
            elif p.ndim >= 2 and "embed" not in name:
                p.copy_(GAIN * noise / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.3 * noise)
    return model.eval()



OFFICIAL_KW = dict(input_size=16, in_channels=4, num_classes=1000, qk_norm=False)
ELIT_KW = dict(group_size=4, elit_min_mask_prob=0.0, elit_max_mask_prob=0.9375)


def save_official(tmp_path, model, name="official.pt", args=None, wrap=True):
    path = tmp_path / name
    state = model.state_dict()
    obj = {"model": state, "ema": state, "opt": {}, "args": args or argparse.Namespace(resolution=128),
           "steps": 1234} if wrap else state
    torch.save(obj, path)
    return path


def convert(path, tmp_path, fmt, model, *extra) -> torch.nn.Module:
    out = tmp_path / f"converted-{model.replace('/', '_')}.pt"
    assert cli(["convert", str(path), "--format", fmt, "--model", model, "--out", str(out), *extra]) == 0
    return model_from_checkpoint(load_checkpoint(out))


def inputs(seed=1, batch=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 16, 16, generator=g)
    t = torch.rand(batch, generator=g)
    y = torch.tensor([3, 999, 1000])[:batch]  # 1000: the null label
    return x, t, y


@pytest.fixture(scope="module")
def elit_pair(oracle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("elit")
    official = randomise(oracle.elit["ELIT-SiT-S/2"](**OFFICIAL_KW, **ELIT_KW), seed=0)
    ours = convert(save_official(tmp, official), tmp, "elit-official", "ELIT-SiT-S/2")
    return official, ours


# ---------------------------------------------------------------- forwards
@pytest.mark.parametrize("budget", [1, 4, 8, 16])
def test_elit_sit_forward_matches_official(elit_pair, budget):
    # catches: a norm or modulation in the wrong place, a missing within-group position, the Read on kept
    # latents only, dropped latents not restored before the Write, the time or velocity sign convention
    official, ours = elit_pair
    x, t, y = inputs()
    with torch.no_grad():
        want = -official(x, 1 - t, y, inference_budget=budget / 16)[0]
        got = ours(x, t, y, budget=budget)
    assert want.abs().mean() > 0.1  # a live network, not an all-zero output
    assert (got - want).abs().max().item() <= 1e-5


def test_budgets_change_the_official_output(elit_pair):
    # catches: a converted model that ignores the budget (the parity above would then only hold at J = 16)
    _, ours = elit_pair
    x, t, y = inputs()
    with torch.no_grad():
        outs = [ours(x, t, y, budget=b) for b in (1, 4, 16)]
    assert (outs[0] - outs[1]).abs().max() > 1e-3 and (outs[1] - outs[2]).abs().max() > 1e-3


def test_sit_forward_matches_official(oracle, tmp_path):
    # the ELIT code's SiT baseline (REPA-style, t = 1 at noise)
    official = randomise(oracle.sit["SiT-S/2"](**OFFICIAL_KW), seed=2)
    ours = convert(save_official(tmp_path, official), tmp_path, "elit-official", "SiT-S/2")
    x, t, y = inputs()
    with torch.no_grad():
        want = -official(x, 1 - t, y)[0]
        got = ours(x, t, y)
    assert want.abs().mean() > 0.1
    assert (got - want).abs().max().item() <= 1e-5


def test_willisma_sit_forward_matches_official(oracle, tmp_path):
    # willisma/SiT: t = 0 at noise like ours, learned sigma dropped; catches the (p, q, c) output row order
    official = randomise(oracle.willisma["SiT-S/2"](input_size=16, in_channels=4, num_classes=1000), seed=3)
    ours = convert(save_official(tmp_path, official, wrap=False), tmp_path, "sit-official", "SiT-S/2")
    x, t, y = inputs()
    with torch.no_grad():
        want = official(x, t, y)
        got = ours(x, t, y)
    assert want.abs().mean() > 0.1
    assert (got - want).abs().max().item() <= 1e-5


# ---------------------------------------------------------------- whole samples
@pytest.mark.parametrize("mode", ["cfg", "ccfg"])
def test_euler_samples_match_official_sampler(oracle, elit_pair, mode):
    # catches: a different guidance formula or scale convention, the guide pass at the wrong budget or label
    official, ours = elit_pair
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(2, 4, 16, 16, generator=g)
    y = torch.tensor([7, 42])
    w, steps = 2.5, 10
    with torch.no_grad():
        want = oracle.euler(official, noise, y, num_steps=steps, cfg_scale=w, inference_budget=1.0,
                            unconditional_inference_budget=1 / 16 if mode == "ccfg" else None)
        times = time_grid(steps)
        guidance = Guidance(mode, w - 1, 1 if mode == "ccfg" else None)
        plan = build_plan(ours, times, "euler", [16] * steps, guidance)
        got = solve(GuidedVelocity(ours, y, plan, w - 1), noise, times)
    assert want.abs().mean() > 0.1
    assert (got.double() - want).abs().max().item() <= 1e-4


# ---------------------------------------------------------------- FLOPs
def official_flops():
    return json.loads((ORACLE / "elit-official" / "multibudget_flops.json").read_text())


def test_flops_match_the_official_file(oracle, capsys):
    # the released file: GFLOPs of one CFG pair (batch 2) of ELIT-SiT-XL/2 at 256 px, FLOPs = 2 x MACs;
    # catches: Read or Write counted on the kept latents only, a wrong block split, a missing adaLN
    for row in official_flops():
        J = round(row["budget"] * 16)
        assert cli(["flops", "ELIT-SiT-XL/2", "--resolution", "256", "--budget", str(J), "--json"]) == 0
        ours = 2 * json.loads(capsys.readouterr().out)["forward_gflops"]
        assert ours == pytest.approx(row["gflops_per_forward"], rel=0.005), J


def test_ccfg_flops_match_the_official_file(oracle):
    rows = json.loads((ORACLE / "elit-official" / "ccfg_flops.json").read_text())
    ccfg = next(r["gflops_per_step"] for r in rows if r["mode"] == "CCFG")
    with torch.device("meta"):
        model = create_model("ELIT-SiT-XL/2", resolution=256)
    cfg_pair = 2 * forward_flops(model, 16)
    ours = guidance_flops_ratio(model, "ccfg", 16, 2) * cfg_pair / 1e9  # guide budget 1/8 = 2 of 16
    assert ours == pytest.approx(ccfg, rel=0.005)


# ---------------------------------------------------------------- end-to-end CLI and bad input
def test_converted_checkpoint_samples_through_the_cli(oracle, tmp_path):
    # a pixel-space SiT, so `elit-bench sample` decodes without an autoencoder; the record names the source
    official = randomise(oracle.sit["SiT-S/2"](input_size=8, in_channels=3, num_classes=1000, qk_norm=False), 5)
    src = save_official(tmp_path, official)
    out = tmp_path / "sit.pt"
    assert cli(["convert", str(src), "--format", "elit-official", "--model", "SiT-S/2", "--pixels",
                "--out", str(out)]) == 0
    assert cli(["sample", str(out), "--num", "4", "--steps", "3", "--guidance", "cfg", "--scale", "1.0",
                "--out", str(tmp_path / "samples"), "--no-progress"]) == 0
    record = json.loads((tmp_path / "samples" / "samples.json").read_text())
    source = record["converted_from"]
    assert source["format"] == "elit-official" and source["sha256"] == file_sha256(src)
    assert record["checkpoint_step"] == 1234 and record["num_samples"] == 4
    with np.load(tmp_path / "samples" / "samples.npz") as f:
        assert f["arr_0"].shape == (4, 8, 8, 3) and f["arr_0"].dtype == np.uint8


def _convert_fails(capsys, src, out, model, *extra) -> str:
    out.write_bytes(b"earlier file")
    code = cli(["convert", str(src), "--format", "elit-official", "--model", model, "--out", str(out), *extra])
    assert code == 2
    assert out.read_bytes() == b"earlier file"  # nothing written over it
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def elit_file(oracle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    return save_official(tmp, oracle.elit["ELIT-SiT-S/2"](**OFFICIAL_KW, **ELIT_KW))


def test_wrong_size_names_the_first_mismatched_key(elit_file, tmp_path, capsys):
    err = _convert_fails(capsys, elit_file, tmp_path / "o.pt", "ELIT-SiT-B/2")
    assert "'x_embedder.proj.weight'" in err and "(384, 16)" in err and "(768, 16)" in err


def test_wrong_family_names_the_key(elit_file, tmp_path, capsys):
    err = _convert_fails(capsys, elit_file, tmp_path / "o.pt", "SiT-S/2")
    assert "input_token_editor" in err


def test_unknown_model_and_wrong_input_size(elit_file, tmp_path, capsys):
    assert "unknown model 'ELIT-SiT-Q/2'" in _convert_fails(capsys, elit_file, tmp_path / "o.pt", "ELIT-SiT-Q/2")
    err = _convert_fails(capsys, elit_file, tmp_path / "o.pt", "ELIT-SiT-S/2", "--set", "input_size=32")
    assert "latent_pos_embed" in err or "pos_embed" in err


def test_extra_source_key_is_an_error(oracle, tmp_path, capsys):
    state = oracle.sit["SiT-S/2"](**OFFICIAL_KW).state_dict()
    state["blocks.0.attn.extra.weight"] = torch.zeros(3)
    src = tmp_path / "extra.pt"
    torch.save(state, src)
    assert "blocks.0.attn.extra.weight" in _convert_fails(capsys, src, tmp_path / "o.pt", "SiT-S/2")


class Payload:  # any object beyond argparse.Namespace must not be unpickled
    pass


def test_arbitrary_pickled_objects_are_refused(oracle, tmp_path, capsys):
    src = tmp_path / "evil.pt"
    torch.save({"model": oracle.sit["SiT-S/2"](**OFFICIAL_KW).state_dict(), "args": Payload()}, src)
    assert "weights-only" in _convert_fails(capsys, src, tmp_path / "o.pt", "SiT-S/2")


def test_a_suite_evaluates_a_converted_checkpoint(oracle, tmp_path, monkeypatch, capsys):
    # catches: a suite that can only evaluate what it trained; the imported run must sample, score and record
    # its source without training
    official = randomise(oracle.sit["SiT-S/2"](input_size=16, in_channels=1, num_classes=10, qk_norm=False), 6)
    src, ckpt = save_official(tmp_path, official), tmp_path / "authors.pt"
    assert cli(["convert", str(src), "--format", "elit-official", "--model", "SiT-S/2", "--pixels",
                "--out", str(ckpt)]) == 0
    suite = tmp_path / "imported.yaml"
    suite.write_text("""
name: imported
variables: {AUTHORS_CKPT: "a harness checkpoint, e.g. from elit-bench convert"}
base:
  sample: {steps: 2, batch: 16}
  metrics: {names: [digits_fd, digits_acc], num_samples: 16, real: digits}
runs:
  - {label: SiT-S/2 (authors), checkpoint: "${AUTHORS_CKPT}"}
evals:
  - {label: CFG, sample: {guidance: cfg, scale: 1.0}}
scales: {smoke: {}}
""")
    monkeypatch.setenv("AUTHORS_CKPT", str(tmp_path / "missing.pt"))
    assert cli(["run", str(suite), "--out", str(tmp_path / "runs"), "--dry-run"]) == 2
    assert "missing.pt' does not exist" in capsys.readouterr().err
    monkeypatch.setenv("AUTHORS_CKPT", str(ckpt))
    assert cli(["run", str(suite), "--out", str(tmp_path / "runs"), "-q"]) == 0
    records = [p for p in (tmp_path / "runs").rglob("records/*.json") if "real-data" not in p.parts]
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["run_label"] == "SiT-S/2 (authors)" and record["model"] == "SiT-S/2"
    assert record["provenance"]["checkpoint_sha256"] == file_sha256(ckpt)
    assert 0 <= record["metrics"]["digits_acc"] <= 1 and record["metrics"]["digits_fd"] > 0
    samples = json.loads(next((tmp_path / "runs").rglob("samples.json")).read_text())
    assert samples["converted_from"]["sha256"] == file_sha256(src)
