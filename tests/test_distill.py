"""Fine-tuning from a teacher: the distillation term, the training time shift, their training runs and errors."""

import copy
import json

import pytest
import torch

from elit_bench.checkpoint import load_checkpoint
from elit_bench.errors import UserError
from elit_bench.flops import TRAIN_MULTIPLIER, forward_flops, train_forward_flops
from elit_bench.flow.loss import distilled_flow_loss, interpolate, rectified_flow_loss, sample_timesteps
from elit_bench.flow.sampling import time_grid
from elit_bench.models import create_model
from elit_bench.training import train
from elit_bench.training.config import build_meta_model, expected_train_tflops, identity, resolve_config
from elit_bench.training.trainer import optimization_step
from helpers import tiny_suite

TINY_KW = {"hidden_size": 32, "depth": 2, "num_heads": 2}
INPUTS = {"input_size": 8, "in_channels": 1, "num_classes": 10}
BASE = {"data": "digits", "resolution": 8, "batch": 8, "steps": 1, "lr": 1e-3, "warmup": 1, "log_every": 1,
        "progress": False, "model_kwargs": TINY_KW}


def tiny(name="DiT-S/2", seed=0, **kw):
    """A tiny model with every weight random (the zero-initialised output layers would make any two agree)."""
    torch.manual_seed(seed)
    model = create_model(name, **{**TINY_KW, **INPUTS, **kw})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, 1, 8, 8, generator=g)
    return x1, torch.randint(11, (n,), generator=g), torch.rand(n, generator=g), torch.randn(n, 1, 8, 8, generator=g)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A tiny DiT trained one step on 8 px digits: the teacher (and the student's start)."""
    out = tmp_path_factory.mktemp("teacher")
    train({**BASE, "model": "DiT-S/2", "out": str(out)})
    return str(out / "checkpoints/last.pt")


# ---------------------------------------------------------------- the loss
def test_without_teacher_or_at_weight_zero_the_step_is_the_plain_rectified_flow_step():
    # catches: a distillation term that leaks into the loss or the gradient when it should weigh nothing, a
    # teacher forward that changes the student's (shared state, another input)
    x1, y, t, noise = batch()
    results = []
    for teacher, weight in ((None, None), (tiny(seed=5), 0.0)):
        model = tiny()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss, norm, _ = optimization_step(model, model, copy.deepcopy(model), optimizer, torch.autocast("cpu", enabled=False),
                                          x1, y, t, noise, teacher=teacher, distill_weight=weight)
        results.append((loss, norm, model.state_dict()))
    (loss0, norm0, weights0), (loss1, norm1, weights1) = results
    assert torch.equal(loss0, loss1) and torch.equal(norm0, norm1)
    assert all(torch.equal(weights0[k], weights1[k]) for k in weights0)
    fresh = tiny()
    assert torch.equal(loss0, rectified_flow_loss(fresh, x1, y, t, noise))


def test_the_distillation_term_is_the_mean_squared_velocity_gap_on_the_same_input():
    # catches: the teacher fed the data or the noise instead of X_t, other labels or times, the student's budget
    # passed to the teacher, a sum instead of a mean, the loss mask ignored, gradient into the teacher
    student, teacher = tiny("ELIT-DiT-S/2", group_size=2, depth=3), tiny(seed=3)
    x1, y, t, noise = batch()
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 1:7, 2:6] = 1
    rf, distill = distilled_flow_loss(student, x1, y, t, noise, mask, teacher=teacher, budget=2)
    x_t = interpolate(x1, noise, t)
    with torch.no_grad():
        gap = student(x_t, t, y, budget=2) - teacher(x_t, t, y)
    expected = (gap.square() * mask).sum() / (mask.sum() * len(x1))
    torch.testing.assert_close(distill.detach(), expected, rtol=1e-6, atol=0)
    assert torch.equal(rf, rectified_flow_loss(student, x1, y, t, noise, mask, budget=2))
    (rf + 20 * distill).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)


def test_a_student_equal_to_its_teacher_has_zero_distillation_loss():
    # catches: a teacher that sees another input than the student (other t, labels or noise): a copy would differ
    student = tiny()
    x1, y, t, noise = batch()
    rf, distill = distilled_flow_loss(student, x1, y, t, noise, teacher=copy.deepcopy(student).eval())
    assert float(distill.detach()) == 0.0 and float(rf.detach()) > 0


# ---------------------------------------------------------------- the time shift
@pytest.mark.parametrize("kind", ["logit_normal", "uniform"])
@pytest.mark.parametrize("shift", [0.5, 2.0, 2.22, 3.0])
def test_the_training_time_shift_is_the_sampling_shift(kind, shift):
    # catches: a training shift that is not the sampling grid's formula (or the inverse map, or on t instead of
    # the noise level), a shift 1 that perturbs the draws, a shift that redraws instead of mapping
    plain = sample_timesteps(4096, kind, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, sample_timesteps(4096, kind, generator=torch.Generator().manual_seed(0), shift=1.0))
    shifted = sample_timesteps(4096, kind, generator=torch.Generator().manual_seed(0), shift=shift)
    s = 1 - plain.double()  # the noise level
    torch.testing.assert_close(shifted.double(), 1 - shift * s / (1 + (shift - 1) * s), rtol=0, atol=1e-6)
    # the sampling grid maps its uniform times k / N the same way (sample.shift 2.0 and time_shift 2.0 agree)
    grid = torch.tensor(time_grid(16, shift), dtype=torch.float64)
    uniform = torch.arange(17, dtype=torch.float64) / 16
    torch.testing.assert_close(grid, 1 - shift * (1 - uniform) / (1 + (shift - 1) * (1 - uniform)), rtol=0, atol=1e-12)
    # a shift above 1 moves every time toward the noise (t = 0), below 1 toward the data; order is kept
    assert bool((shifted < plain).all() if shift > 1 else (shifted > plain).all())
    assert torch.equal(torch.argsort(shifted), torch.argsort(plain))


def test_the_trainer_draws_shifted_times(tmp_path, monkeypatch):
    # catches: `train.time_shift` accepted but not applied to the times the model trains on
    import elit_bench.training.trainer as trainer_module

    seen = []
    real = trainer_module.rectified_flow_loss
    monkeypatch.setattr(trainer_module, "rectified_flow_loss",
                        lambda net, x1, y, t, *a, **kw: seen.append(t.clone()) or real(net, x1, y, t, *a, **kw))
    for shift, run in ((1.0, "a"), (2.22, "b")):
        train({**BASE, "model": "DiT-S/2", "time_shift": shift, "out": str(tmp_path / run)})
    s = 1 - seen[0]
    torch.testing.assert_close(seen[1], 1 - 2.22 * s / (1 + 1.22 * s))


# ---------------------------------------------------------------- training runs
def test_training_with_a_teacher_logs_both_terms_and_counts_the_teachers_flops(tmp_path, teacher_ckpt):
    # catches: a teacher never loaded or not the EMA, a logged loss that is not rf + weight x distill, no
    # separate scalars, a throughput that leaves out the teacher's forward, a student not started from the teacher
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = train({**BASE, "model": "DiT-S/2", "steps": 3, "init": teacher_ckpt, "teacher": teacher_ckpt,
                     "distill_weight": 5.0, "out": str(tmp_path)})
    assert summary["step"] == 3
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalar = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    rf, distill, loss = scalar["train/rf_loss"], scalar["train/distill_loss"], scalar["train/loss"]
    assert len(distill) == 3
    assert distill[0] == 0.0 and distill[2] > 0  # the student starts as its teacher, then moves away
    assert loss == pytest.approx([r + 5.0 * d for r, d in zip(rf, distill)], rel=1e-5)
    # the throughput counts the student's training pass and one teacher forward per image
    cfg = load_checkpoint(tmp_path / "checkpoints/last.pt")["config"]
    student = build_meta_model(cfg)
    teacher = build_meta_model(load_checkpoint(teacher_ckpt)["config"])
    per_image = train_forward_flops(student) * TRAIN_MULTIPLIER + forward_flops(teacher)
    ratios = [f * 1e12 / i for f, i in zip(scalar["train/model_tflops_per_s"], scalar["train/images_per_s"])]
    assert ratios == pytest.approx([per_image] * 3, rel=1e-5)
    # and the planned training FLOPs per iteration too
    plain = {**cfg, "teacher": None, "distill_weight": None}
    extra = expected_train_tflops(student, cfg) - expected_train_tflops(student, plain)
    assert extra == pytest.approx(forward_flops(teacher) * cfg["batch"] / 1e12, rel=1e-9) and extra > 0


def test_new_keys_at_their_defaults_keep_run_ids():
    # catches: a key added to the schema that changes the identity (the id) of every run stored before it
    cfg = resolve_config({**BASE, "model": "DiT-S/2"}, check_out=False)
    assert not {"teacher", "distill_weight", "time_shift"} & set(identity(cfg))
    assert identity({**cfg, "time_shift": 2.22})["time_shift"] == 2.22


# ---------------------------------------------------------------- bad input
def test_bad_distillation_settings_are_one_line_errors(tmp_path, teacher_ckpt):
    # catches: a missing teacher found only after the data loaded, a weight silently ignored, a teacher whose
    # inputs differ from the student's failing deep inside a forward
    cases = [({"teacher": str(tmp_path / "nope.pt")}, "is not a file"),
             ({"distill_weight": 20.0}, "without a teacher"),
             ({"teacher": teacher_ckpt, "resolution": 16}, "does not take this model's inputs"),
             ({"time_shift": 0.0}, "time_shift")]
    for extra, message in cases:
        with pytest.raises(UserError, match=message) as info:
            resolve_config({**BASE, "model": "DiT-S/2", **extra, "out": str(tmp_path / "run")})
        assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- suites
DISTILL_RUNS = """  - {label: teacher, train: {model: DiT-S/2}}
  - {label: student, train: {model: DiT-S/2, init: {run: teacher}, teacher: TEACHER}}"""


def test_a_suite_run_distils_from_another_runs_checkpoint(tmp_path):
    # catches: `train.teacher: {run: LABEL}` not resolved, an id that ignores the teacher, the runner not handing
    # the training the teacher run's final checkpoint
    from elit_bench.cli import main
    from elit_bench.suites.spec import load_suite

    def suite(teacher):
        path = tmp_path / f"distill-{len(list(tmp_path.glob('*.yaml')))}.yaml"
        path.write_text(tiny_suite("distill", DISTILL_RUNS.replace("TEACHER", teacher)))
        return str(path)

    teacher, student = load_suite(suite("{run: teacher}")).runs("smoke")
    assert student.teacher_run == student.init_run == teacher.id and "teacher" not in student.train
    with pytest.raises(UserError, match="train.teacher names run 'nope'"):
        load_suite(suite("{run: nope}")).runs("smoke")
    out = tmp_path / "out"
    assert main(["run", suite("{run: teacher}"), "--out", str(out), "--no-progress"]) == 0
    resolved = json.loads((out / "distill" / "smoke" / student.id / "run.json").read_text())["resolved"]
    start = out / "distill" / "smoke" / teacher.id / "train" / "checkpoints" / "last.pt"
    assert resolved["teacher"] == resolved["init"] == str(start) and resolved["distill_weight"] == 20.0
