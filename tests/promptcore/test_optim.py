"""Schedules and optimizers of promptcore.optim: Dassl's per-epoch schedule pinned against its rules written out
here, T5X Adafactor against transformers' Adafactor in float64, and the config checks around them."""

import math

import pytest
import torch


from toy_prompted import LrRecorder, toy_data, toy_model  # noqa: E402

from promptcore import TrainConfig, Trainer  # noqa: E402
from promptcore.config import ConfigError, load_config  # noqa: E402
from promptcore.optim import AdafactorT5X, LRSchedule, build_optimizer  # noqa: E402


# ----- Dassl's schedule --------------------------------------------------------------------------------------------
def dassl_epoch_lrs(base: float, max_epoch: int, warmup_epoch: int, warmup_type: str, warmup_lr: float) -> list[float]:
    """The rate of each epoch under Dassl's build_lr_scheduler (LR_SCHEDULER cosine, WARMUP_RECOUNT True), whose
    trainer steps the scheduler once after each epoch's last batch, rebuilt from its rules with torch's own
    CosineAnnealingLR as the successor:

    - the successor CosineAnnealingLR(T_max=max_epoch) is built first (its last_epoch 0, rate = base);
    - the warmup wrapper's construction steps it to its last_epoch 0: epoch 0 runs at warmup_lr (constant), or at
      WARMUP_MIN_LR (linear; later warmup epochs at base * epoch / warmup_epoch);
    - at last_epoch == warmup_epoch the wrapper returns the successor's last rate, base, without stepping it;
    - every later step steps the successor (from last_epoch 0: the count was recounted).
    """
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(max_epoch))
    lrs = []
    for epoch in range(max_epoch):
        if epoch < warmup_epoch:
            lrs.append(warmup_lr if warmup_type == "constant" or epoch == 0 else base * epoch / warmup_epoch)
        elif epoch == warmup_epoch:
            lrs.append(successor.get_last_lr()[0])
        else:
            optimizer.step()  # no gradients: nothing moves; torch expects it before the scheduler's step
            successor.step()
            lrs.append(successor.get_last_lr()[0])
    return lrs


def epoch_lrs(schedule: LRSchedule, base: float) -> list[float]:
    return [schedule.lr(e * schedule.steps_per_epoch, base) for e in range(schedule.epochs)]


@pytest.mark.parametrize(
    "base, epochs, warmup, steps_per_epoch",
    [(0.002, 200, 1, 3), (0.0035, 5, 1, 7), (0.002, 10, 1, 1), (0.01, 8, 3, 2)],  # CoOp, MaPLe, CoCoOp-like
)
def test_constant_warmup_per_epoch_equals_dassl(base, epochs, warmup, steps_per_epoch):
    cfg = TrainConfig(lr=base, epochs=epochs, scheduler="cosine", schedule_unit="epoch", warmup_epochs=warmup, warmup_type="constant", warmup_lr=1e-5)
    schedule = LRSchedule.from_config(cfg, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    ours = epoch_lrs(schedule, base)
    reference = dassl_epoch_lrs(base, epochs, warmup, "constant", 1e-5)
    for e, (a, b) in enumerate(zip(ours, reference)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-18), f"epoch {e}"
    # The rules in closed form: warmup epochs at 1e-5, the base rate at the hand-over, the cosine of the whole
    # run recounted from the hand-over, so the last epoch is above 0.
    assert ours[:warmup] == [1e-5] * warmup and ours[warmup] == base
    assert ours[-1] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * (epochs - 1 - warmup) / epochs)), rel=1e-12)
    assert ours[-1] > 0
    # Every step of an epoch uses the epoch's rate (the schedule changes at epoch boundaries only).
    for e in range(epochs):
        assert {schedule.lr(e * steps_per_epoch + i, base) for i in range(steps_per_epoch)} == {ours[e]}


def test_coop_preset_values():
    cfg = TrainConfig(lr=0.002, epochs=200, schedule_unit="epoch", warmup_epochs=1, warmup_type="constant", warmup_lr=1e-5)
    lrs = epoch_lrs(LRSchedule.from_config(cfg, total_steps=200, steps_per_epoch=1), 0.002)
    assert lrs[0] == 1e-5 and lrs[1] == 0.002
    assert lrs[101] == pytest.approx(0.001, rel=1e-12)  # halfway through the cosine period: (101 - 1) / 200
    assert lrs[199] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 198 / 200)), rel=1e-12)


def test_linear_warmup_per_epoch_equals_dassl():
    cfg = TrainConfig(lr=0.1, epochs=6, schedule_unit="epoch", warmup_epochs=2, warmup_type="linear", warmup_lr=1e-4)
    ours = epoch_lrs(LRSchedule.from_config(cfg, total_steps=12, steps_per_epoch=2), 0.1)
    assert ours == pytest.approx(dassl_epoch_lrs(0.1, 6, 2, "linear", 1e-4), rel=1e-12)
    assert ours[:3] == pytest.approx([1e-4, 0.05, 0.1])


def test_trainer_steps_the_dassl_schedule_per_epoch_for_every_group():
    # 40 rows, batch 8: 5 steps per epoch. The head trains at a tenth of the prompts' rate; the constant warmup
    # holds both at warmup_lr (an absolute rate, as Dassl gives every group WARMUP_CONS_LR).
    recorder = LrRecorder()
    cfg = TrainConfig(
        epochs=4, batch_size=8, lr=0.05, optimizer="sgd", param_groups={"head": {"lr": 0.005}}, schedule_unit="epoch",
        warmup_epochs=1, warmup_type="constant", warmup_lr=1e-5, progress_bar=False, tensorboard=False,
    )
    Trainer(toy_model(), cfg, toy_data(), callbacks=[recorder]).fit()
    assert len(recorder.lrs) == 20
    for name, base in (("prompts", 0.05), ("head", 0.005)):
        expected = [lr for lr in dassl_epoch_lrs(base, 4, 1, "constant", 1e-5) for _ in range(5)]
        assert [r[name] for r in recorder.lrs.values()] == pytest.approx(expected, rel=1e-12)


def test_constant_warmup_per_step():
    cfg = TrainConfig(lr=0.1, epochs=2, warmup_steps=3, warmup_type="constant", warmup_lr=1e-3, scheduler="linear")
    schedule = LRSchedule.from_config(cfg, total_steps=10, steps_per_epoch=5)
    assert [schedule.lr(s, 0.1) for s in range(4)] == pytest.approx([1e-3, 1e-3, 1e-3, 0.1])
    assert schedule.lr(9, 0.1) == pytest.approx(0.1 * (1 - 6 / 7))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"warmup_epochs": 1, "warmup_type": "constant"}, "warmup_lr: required, a constant warmup holds warmup_lr"),
        ({"warmup_epochs": 1, "schedule_unit": "epoch"}, "warmup_lr: required, a linear per-epoch warmup starts at warmup_lr"),
        ({"warmup_epochs": 0.5, "schedule_unit": "epoch", "warmup_lr": 1e-5}, "warmup_epochs: schedule_unit epoch warms up over whole epochs, got 0.5"),
        ({"warmup_steps": 2, "schedule_unit": "epoch"}, "warmup_steps: schedule_unit epoch warms up over whole epochs; use warmup_epochs"),
        ({"warmup_lr": 1e-5}, "warmup_lr: set, but there is no warmup"),
        ({"warmup_steps": 5, "warmup_lr": 1e-5}, "warmup_lr: a linear per-step warmup starts at lr / warmup steps"),
        ({"warmup_steps": 5, "warmup_type": "constant", "warmup_lr": float("nan")}, "warmup_lr: must be a positive finite number, got nan"),
        ({"lr": float("nan")}, "lr: must be a positive finite number, got nan"),
        ({"lr": float("inf")}, "lr: must be a positive finite number, got inf"),
        ({"weight_decay": float("nan")}, "weight_decay: must be a finite number >= 0, got nan"),
        ({"param_groups": {"head": {"lr": float("inf")}}}, "param_groups.head.lr: must be a positive finite number, got inf"),
        ({"param_groups": {"head": {"weight_decay": -1.0}}}, "param_groups.head.weight_decay: must be a finite number >= 0, got -1.0"),
        ({"param_groups": {"head": {"lrr": 0.1}}}, "param_groups.head.lrr: unknown setting. Did you mean 'lr'?"),
        ({"adafactor_start_step": 10}, r"adafactor_start_step: only adafactor_t5x uses it \(optimizer is adamw\)"),
        ({"min_lr_ratio": 2.0}, r"min_lr_ratio: must lie in \[0, 1\]"),
    ],
)
def test_bad_schedule_and_rate_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, overrides)


def test_nan_lr_from_yaml_and_overrides_is_refused():
    with pytest.raises(ConfigError, match="lr: must be a positive finite number, got nan"):
        load_config(TrainConfig, {}, ["lr=.nan"])
    with pytest.raises(ConfigError, match="warmup_lr: must be a positive finite number, got inf"):
        load_config(TrainConfig, {"warmup_steps": 2, "warmup_type": "constant"}, ["warmup_lr=.inf"])


# ----- T5X Adafactor -----------------------------------------------------------------------------------------------
def run_pair(shape, steps=6, lr=0.3, weight_decay=0.0, start_step=0, hf_view=None, seed=0):
    """Runs AdafactorT5X and transformers' Adafactor (configured as the T5X recipe) side by side in float64 on
    the same gradients; ``hf_view`` reshapes the parameter transformers sees. Returns both parameters."""
    from transformers.optimization import Adafactor

    gen = torch.Generator().manual_seed(seed)
    init = torch.randn(shape, generator=gen, dtype=torch.float64)
    ours = torch.nn.Parameter(init.clone())
    theirs = torch.nn.Parameter(init.clone().reshape(hf_view or shape))
    opt_ours = AdafactorT5X([ours], lr=lr, weight_decay=weight_decay, start_step=start_step)
    # transformers scales weight decay by lr; T5X's rate is not scaled: weight_decay / lr gives the same decay.
    opt_theirs = Adafactor(
        [theirs], lr=lr, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
        weight_decay=weight_decay / lr, scale_parameter=False, relative_step=False, warmup_init=False,
    )
    if start_step:
        p = theirs
        factored = p.dim() >= 2
        opt_theirs.state[p] = {"step": start_step, "RMS": 0}
        if factored:
            opt_theirs.state[p].update(exp_avg_sq_row=torch.zeros(p.shape[:-1], dtype=p.dtype), exp_avg_sq_col=torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype))
        else:
            opt_theirs.state[p]["exp_avg_sq"] = torch.zeros_like(p)
    for _ in range(steps):
        grad = torch.randn(shape, generator=gen, dtype=torch.float64) * 10 ** torch.empty(shape, dtype=torch.float64).uniform_(-3, 1, generator=gen)
        ours.grad = grad.clone()
        theirs.grad = grad.clone().reshape(hf_view or shape)
        opt_ours.step()
        opt_theirs.step()
    return ours.detach(), theirs.detach().reshape(shape), opt_ours


@pytest.mark.parametrize("shape", [(128, 160), (160, 128), (128, 128)])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-5])
def test_adafactor_t5x_factored_equals_transformers(shape, weight_decay):
    ours, theirs, opt = run_pair(shape, weight_decay=weight_decay)
    state = opt.state[next(iter(opt.state))]
    assert "v_row" in state and "v" not in state  # the factored path ran
    assert state["v_row"].shape == (128,) and state["v_col"].shape == (max(shape),)
    torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-5])
def test_adafactor_t5x_vector_and_small_matrix_are_not_factored(weight_decay):
    # A vector, and a 20-token prompt (one dimension below 128: T5X keeps a full second moment; transformers
    # would factor it, so it sees the same values as a vector, which it never factors).
    ours, theirs, _ = run_pair((96,), weight_decay=weight_decay)
    torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-13)
    ours, theirs, opt = run_pair((20, 64), weight_decay=weight_decay, hf_view=(20 * 64,))
    state = opt.state[next(iter(opt.state))]
    assert state["v"].shape == (20, 64) and "v_row" not in state
    torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-13)


def test_adafactor_t5x_start_step_continues_the_decay_schedule():
    # T5X fine-tuning keeps counting from the checkpoint's step (1.1M for the LM-adapted T5 1.1).
    for shape, view in (((128, 144), None), ((12, 32), (12 * 32,))):
        ours, theirs, _ = run_pair(shape, start_step=1_100_000, hf_view=view)
        torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-13)
    fresh, _, _ = run_pair((12, 32), start_step=0)
    late, _, _ = run_pair((12, 32), start_step=1_100_000)
    assert not torch.allclose(fresh, late)  # the start step changes the updates


def test_adafactor_t5x_stacks_are_matrices_over_their_last_two_dimensions():
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(3, 8, 16, generator=gen, dtype=torch.float64)
    grads = [torch.randn(3, 8, 16, generator=gen, dtype=torch.float64) for _ in range(4)]
    stacked = torch.nn.Parameter(init.clone())
    slices = [torch.nn.Parameter(init[i].clone()) for i in range(3)]
    a = AdafactorT5X([stacked], lr=0.1, min_dim_size_to_factor=8)
    b = AdafactorT5X(slices, lr=0.1, min_dim_size_to_factor=8)
    for g in grads:
        stacked.grad = g.clone()
        for i, p in enumerate(slices):
            p.grad = g[i].clone()
        a.step()
        b.step()
    assert a.state[stacked]["v_row"].shape == (3, 8)  # factored per matrix
    torch.testing.assert_close(stacked.detach(), torch.stack([p.detach() for p in slices]), rtol=1e-12, atol=1e-14)


def test_adafactor_t5x_trains_and_resumes_its_state_in_the_trainer(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.3, optimizer="adafactor_t5x", weight_decay=1e-5, scheduler="constant",
                      adafactor_start_step=1_100_000, progress_bar=False, tensorboard=False)
    model = toy_model()
    before = model.prompts.weight.detach().clone()
    trainer = Trainer(model, cfg, toy_data())
    assert isinstance(trainer.optimizer, AdafactorT5X) and trainer.optimizer.param_groups[0]["start_step"] == 1_100_000
    trainer.fit()
    assert not torch.equal(before, model.prompts.weight)
    assert trainer.optimizer.state[model.prompts.weight]["step"] == 5


def test_adam_adds_weight_decay_to_the_gradient():
    # P-tuning's official code trains with torch.optim.Adam(weight_decay=5e-4): the decay is an L2 term in the
    # gradient, normalised by Adam like the rest of it. With a zero gradient the first step moves by lr itself;
    # AdamW's decoupled decay moves by lr * weight_decay.
    moved = {}
    for name in ("adam", "adamw"):
        p = torch.nn.Parameter(torch.ones(1))
        opt = build_optimizer([p], TrainConfig(optimizer=name, lr=0.1, weight_decay=0.5), lr=0.1)
        p.grad = torch.zeros(1)
        opt.step()
        moved[name] = 1.0 - p.item()
    assert moved["adam"] == pytest.approx(0.1, rel=1e-5)
    assert moved["adamw"] == pytest.approx(0.1 * 0.5, rel=1e-5)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_betas_and_eps_reach_adam_and_adamw_and_equal_torch_given_the_same(name):
    cfg = load_config(TrainConfig, {"optimizer": name, "lr": 0.1}, ["betas=[0.5, 0.98]", "eps=1.0e-6"])
    assert cfg.betas == (0.5, 0.98) and cfg.eps == 1e-6
    opt = build_optimizer([torch.nn.Parameter(torch.ones(2))], cfg, lr=0.1)
    assert opt.defaults["betas"] == (0.5, 0.98) and opt.defaults["eps"] == 1e-6
    # The steps equal torch's own optimizer built with the same values, and differ from its defaults'.
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    grads = [torch.tensor([0.3, -2.0], dtype=torch.float64), torch.tensor([1e-7, 0.5], dtype=torch.float64)]
    ours, ref, plain = (torch.nn.Parameter(torch.ones(2, dtype=torch.float64)) for _ in range(3))
    optimizers = [
        build_optimizer([ours], cfg, lr=0.1),
        kind([ref], lr=0.1, betas=(0.5, 0.98), eps=1e-6, weight_decay=0.0),
        kind([plain], lr=0.1, weight_decay=0.0),
    ]
    for grad in grads:
        for p, o in zip((ours, ref, plain), optimizers):
            p.grad = grad.clone()
            o.step()
    assert torch.equal(ours, ref) and not torch.equal(ours, plain)
    default = build_optimizer([torch.nn.Parameter(torch.ones(2))], TrainConfig(optimizer=name), lr=0.1)
    assert default.defaults["betas"] == (0.9, 0.999) and default.defaults["eps"] == 1e-8


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer": "sgd", "betas": [0.9, 0.99]}, r"betas: only adam and adamw use it \(optimizer is sgd"),
        ({"optimizer": "adafactor_t5x", "eps": 1e-6}, r"eps: only adam and adamw use it \(optimizer is adafactor_t5x"),
        ({"betas": [0.9, 1.0]}, r"betas: expected two numbers in \[0, 1\) \(beta1, beta2\)"),
        ({"betas": [0.9]}, r"betas: expected 2 items, found 1"),
        ({"eps": 0.0}, r"eps: must be a positive finite number"),
    ],
)
def test_betas_and_eps_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, overrides)
