"""Trainer: what trains (only prompts), what must not change (the backbone), run directory contents, schedules,
optimizers, precision, and every bad input with its message. Uses the toy model of scripts/toy_prompted.py."""

import json
import math

import pytest
import torch


from toy_prompted import LrRecorder, ToyPrompted, toy_data, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402
from promptcore.config import ConfigError  # noqa: E402
from promptcore.errors import UserError  # noqa: E402
from promptcore.runs import RunDirError  # noqa: E402
from promptcore.optim import AdafactorT5X, build_optimizer, lr_factor  # noqa: E402
from promptcore.callbacks import Callback  # noqa: E402
from promptcore.trainer import EpochBatches, NonFiniteLossError, check_optimizer_params, epoch_generator  # noqa: E402


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=0.05, progress_bar=False, tensorboard=False, log_every_steps=2)
    return TrainConfig(**{**base, **kw})


def backbone_state(model):
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def test_fit_trains_only_prompts_and_leaves_backbone_bitwise_unchanged(tmp_path):
    model = toy_model()
    before = backbone_state(model)
    prompts_before = {k: v.clone() for k, v in model.prompt_state_dict().items()}
    trainer = Trainer(model, cfg(tensorboard=True, progress_bar=True), toy_data(), toy_data(20, split="validation"), run_dir=tmp_path / "run")
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.prompt_parameters()}
    result = trainer.fit()

    after = model.backbone.state_dict()
    assert before.keys() == after.keys() and len(before) >= 6  # BatchNorm running stats included
    for key in before:
        assert torch.equal(before[key], after[key]), f"backbone tensor {key} changed"
    assert model.backbone_modes and not any(model.backbone_modes)  # the backbone ran in eval mode
    for key, value in model.prompt_state_dict().items():
        assert not torch.equal(value, prompts_before[key]), f"prompt tensor {key} did not train"
    # Epochs are 0-based everywhere: the result, metrics.jsonl, best/ and last/.
    assert result["step"] == 10 and result["epoch"] == 1 and result["epochs_done"] == 2
    assert result["eval"]["count"] == 20 and result["best"]["metric"] == "accuracy"

    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "curves.png", "best", "last", "state", "tb"}
    assert any(run.joinpath("tb").iterdir())
    assert run.joinpath("curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in run.joinpath("metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in records if r["split"] != "train"] == ["epoch", "eval", "epoch", "eval"]
    assert records[-1] == {"split": "eval", "epoch": 1, "step": 10, **result["eval"]}
    assert [(r["step"], r["epoch"]) for r in records if r["split"] == "train"] == [(2, 0), (4, 0), (5, 0), (6, 1), (8, 1), (10, 1)]
    # last/ holds the trained prompts, best/ the prompts of the best eval; both load into a fresh model.
    fresh = toy_model(seed=1)
    fresh.load_prompts(run / "last")
    for key, value in model.prompt_state_dict().items():
        assert torch.equal(fresh.prompt_state_dict()[key], value)
    best_meta = json.loads(run.joinpath("best", "prompt_config.json").read_text())
    assert best_meta["step"] == result["best"]["step"] and best_meta["value"] == result["best"]["value"]
    assert best_meta["epoch"] == result["best"]["epoch"] == (result["best"]["step"] - 1) // 5
    assert json.loads(run.joinpath("last", "prompt_config.json").read_text())["epoch"] == 1
    assert "train:" in run.joinpath("config.yaml").read_text()


def test_only_prompt_parameters_receive_gradients():
    model = toy_model()
    Trainer(model, cfg(), toy_data())
    batch = {"pixel_values": torch.randn(4, 3, 4, 4), "labels": torch.tensor([0, 1, 2, 3])}
    model.training_step(batch).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in model.named_prompt_parameters()} == {"prompts.weight", "head.weight", "head.bias"}


def test_frozen_modules_outside_the_backbone_stay_in_eval_mode():
    class WithHelper(ToyPrompted):
        def __init__(self):
            super().__init__()
            self.helper = torch.nn.Dropout(0.5)  # frozen, not the backbone: base train() would leave it training

    model = WithHelper()
    trainer = Trainer(model, cfg(), toy_data())
    trainer._set_train_mode()
    assert model.prompts.training and model.head.training
    assert not model.helper.training and not model.backbone.training


def test_evaluate_sums_batches_and_reports_sum_over_count():
    model = toy_model()
    data = toy_data(21, split="validation")
    trainer = Trainer(model, cfg(eval_batch_size=4), None, data)
    metrics = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        logits = model.forward_batch({"pixel_values": data.images})
    expected_loss = torch.nn.functional.cross_entropy(logits.double(), data.labels).item()
    assert metrics["count"] == 21
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(-1) == data.labels).double().mean().item())
    with pytest.raises(ValueError, match=r"fit\(\) needs a train dataset"):
        trainer.fit()


def test_lr_schedules_warmup_and_floor():
    assert [lr_factor(s, 10, 2, "constant", 0.0) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(2, 10, 2, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, 10, 2, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(6, 10, 2, "linear", 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(3, 10, 0, "step", 0.0)


def test_scheduler_follows_config_and_linear_lr_scaling():
    # 40 rows, batch 8 -> 5 steps/epoch; warmup 1 epoch + 1 step = 6 steps of 20.
    recorder = LrRecorder()
    trainer = Trainer(toy_model(), cfg(epochs=4, lr=0.1, lr_scaling="linear", warmup_epochs=1, warmup_steps=1, max_steps=20), toy_data(), callbacks=[recorder])
    assert trainer.lr == pytest.approx(0.1 * 8 / 256)
    assert (trainer.total_steps, trainer.warmup_steps) == (20, 6)
    trainer.fit()
    lrs = [r["all"] for r in recorder.lrs.values()]
    assert len(lrs) == 20
    assert lrs[0] == pytest.approx(trainer.lr / 6) and lrs[5] == pytest.approx(trainer.lr)
    assert lrs[:6] == sorted(lrs[:6]) and lrs[6:] == sorted(lrs[6:], reverse=True) and lrs[6] > lrs[19] > 0


@pytest.mark.parametrize(
    "name, cls", [("sgd", torch.optim.SGD), ("adafactor", torch.optim.Adafactor), ("adamw", torch.optim.AdamW), ("adafactor_t5x", AdafactorT5X)]
)
def test_optimizers(name, cls):
    model = toy_model()
    trainer = Trainer(model, cfg(optimizer=name, epochs=1, lr=0.01), toy_data())
    assert isinstance(trainer.optimizer, cls)
    before = model.prompts.weight.detach().clone()
    trainer.fit()
    assert not torch.equal(before, model.prompts.weight)


def test_optimizer_param_check_names_the_offender():
    model = toy_model().freeze_backbone()
    wrong = build_optimizer(list(model.prompt_parameters()) + [model.backbone[1].weight], cfg(), 0.1)
    with pytest.raises(RuntimeError, match=r"non-prompt parameters \['backbone.1.weight'\]"):
        check_optimizer_params(wrong, model)
    missing = build_optimizer([model.prompts.weight], cfg(), 0.1)
    with pytest.raises(RuntimeError, match=r"misses prompt parameters \['head.weight', 'head.bias'\]"):
        check_optimizer_params(missing, model)


def test_grad_accumulation_equals_the_large_batch():
    # Same global batch (8) as 2 micro-batches of 4 or 1 of 8: same update up to float rounding (no dropout).
    a, b = toy_model(prompt_dropout=0.0), toy_model(prompt_dropout=0.0)
    Trainer(a, cfg(batch_size=8, grad_clip=0.5), toy_data(42)).fit()
    Trainer(b, cfg(batch_size=4, grad_accum_steps=2, grad_clip=0.5), toy_data(42)).fit()
    for key, value in a.prompt_state_dict().items():
        torch.testing.assert_close(b.prompt_state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_epoch_batches_cover_every_row_once_and_skip_exactly():
    ranks = [EpochBatches(42, 4, 2, r, seed=3, epoch=1) for r in range(2)]
    seen = [i for s in ranks for b in s for i in b]
    assert sorted(seen) == list(range(42))
    assert [s.global_size(5) for s in ranks] == [2, 2] and ranks[0].local_size(5) == 1
    full = list(EpochBatches(42, 8, 1, 0, seed=3, epoch=1))
    assert list(EpochBatches(42, 8, 1, 0, seed=3, epoch=1, start=2)) == full[2:]
    assert full != list(EpochBatches(42, 8, 1, 0, seed=3, epoch=2))


def test_epoch_batches_take_a_given_order_and_drop_the_short_last_batch():
    order = list(range(41, -1, -1))
    batches = list(EpochBatches(42, 8, 1, 0, seed=3, epoch=1, order=order))
    assert batches == [order[i : i + 8] for i in range(0, 42, 8)] and len(batches[-1]) == 2
    dropped = EpochBatches(42, 8, 1, 0, seed=3, epoch=1, drop_last=True)
    assert list(dropped) == list(EpochBatches(42, 8, 1, 0, seed=3, epoch=1))[:5] and len(dropped) == dropped.num_micro == 5
    ranks = [EpochBatches(42, 4, 2, r, seed=3, epoch=1, drop_last=True) for r in range(2)]
    assert sorted(i for s in ranks for b in s for i in b) == sorted(EpochBatches(42, 8, 1, 0, seed=3, epoch=1).order[:40].tolist())
    with pytest.raises(UserError, match=r"batch order of epoch 1: expected 42 integer row indices .*got shape \(41,\)"):
        EpochBatches(42, 8, 1, 0, seed=3, epoch=1, order=order[1:])
    with pytest.raises(UserError, match=r"batch order of epoch 1: indices must lie in \[0, 41\], got 0 .. 42"):
        EpochBatches(42, 8, 1, 0, seed=3, epoch=1, order=[42] + order[1:])


class Recorded(torch.utils.data.Dataset):
    """A dataset that records the rows read, in order."""

    def __init__(self, data):
        self.data, self.rows = data, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.rows.append(i)
        return self.data[i]


class EpochRecorder(Callback):
    def __init__(self):
        self.events = []

    def on_epoch_begin(self, trainer):
        self.events.append(("begin", trainer.progress.epoch, trainer.progress.step))

    def on_epoch_end(self, trainer):
        self.events.append(("end", trainer.progress.epoch, trainer.progress.step))


def test_batch_order_hook_and_on_epoch_begin():
    # The hook giving the default permutation trains bitwise as the default; another order trains otherwise.
    default, same, other = toy_model(), toy_model(), toy_model()
    Trainer(default, cfg(), toy_data()).fit()
    recorder = EpochRecorder()
    data = Recorded(toy_data())
    Trainer(same, cfg(), data, callbacks=[recorder], batch_order=lambda epoch: torch.randperm(40, generator=epoch_generator(0, epoch))).fit()
    assert data.rows == [i for e in range(2) for i in torch.randperm(40, generator=epoch_generator(0, e)).tolist()]
    assert recorder.events == [("begin", 0, 0), ("end", 0, 5), ("begin", 1, 5), ("end", 1, 10)]
    assert all(torch.equal(v, same.prompt_state_dict()[k]) for k, v in default.prompt_state_dict().items())

    class Reversed(torch.utils.data.Sampler):
        def __init__(self):
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __iter__(self):
            return iter(range(39, -1, -1) if self.epochs[-1] % 2 else range(40))

        def __len__(self):
            return 40

    sampler, data = Reversed(), Recorded(toy_data())
    Trainer(other, cfg(), data, batch_order=sampler).fit()
    assert sampler.epochs == [0, 1] and data.rows == list(range(40)) + list(range(39, -1, -1))
    assert not torch.equal(other.prompts.weight, default.prompts.weight)
    with pytest.raises(UserError, match=r"batch_order: expected a callable \(epoch -> row indices\) or a torch Sampler, got list"):
        Trainer(toy_model(), cfg(), toy_data(), batch_order=list(range(40)))
    with pytest.raises(UserError, match=r"batch order of epoch 0: expected 40 integer row indices"):
        Trainer(toy_model(), cfg(), toy_data(), batch_order=lambda epoch: range(10)).fit()


def test_drop_last_leaves_out_each_epochs_short_batch():
    kept, dropped = toy_model(), toy_model()
    t = Trainer(kept, cfg(batch_size=16), toy_data(40))
    assert t.steps_per_epoch == 3 and t.fit()["step"] == 6
    data = Recorded(toy_data(40))
    t = Trainer(dropped, cfg(batch_size=16, drop_last=True), data)
    assert t.steps_per_epoch == 2 and t.fit()["step"] == 4
    orders = [torch.randperm(40, generator=epoch_generator(0, e)).tolist() for e in range(2)]
    assert data.rows == orders[0][:32] + orders[1][:32]
    # Data smaller than one batch stays one short batch, as in Dassl (drop_last=len(data) >= batch_size).
    assert Trainer(toy_model(), cfg(batch_size=64, drop_last=True), toy_data(40)).steps_per_epoch == 1
    assert len(EpochBatches(40, 64, 1, 0, seed=0, epoch=0, drop_last=True)) == 1


def test_same_seed_same_run_and_max_steps(tmp_path):
    results = []
    for name in ("a", "b"):
        model = toy_model()
        result = Trainer(model, cfg(max_steps=7), toy_data(), toy_data(20, split="validation"), run_dir=tmp_path / name).fit()
        results.append((result, model.prompt_state_dict()))
    assert results[0][0]["step"] == 7 and results[0][0]["epoch"] == 1 and results[0][0]["epochs_done"] == 1
    assert results[0][0]["eval"] == results[1][0]["eval"]
    for key in results[0][1]:
        assert torch.equal(results[0][1][key], results[1][1][key])
    assert (tmp_path / "a/metrics.jsonl").read_text() == (tmp_path / "b/metrics.jsonl").read_text()


def test_bf16_autocast_trains(tmp_path):
    model = toy_model()
    before = model.prompts.weight.detach().clone()
    result = Trainer(model, cfg(mixed_precision="bf16", epochs=1), toy_data(), toy_data(20, split="validation")).fit()
    assert math.isfinite(result["eval"]["loss"]) and not torch.equal(before, model.prompts.weight)
    assert model.prompts.weight.dtype == torch.float32  # autocast only: the prompts stay float32


def test_gradient_checkpointing_is_enabled_or_refused_clearly():
    class Checkpointed(ToyPrompted):
        enabled = False

        def enable_gradient_checkpointing(self):
            self.enabled = True

    model = Checkpointed()
    Trainer(model, cfg(gradient_checkpointing=True), toy_data())
    assert model.enabled
    with pytest.raises(ValueError, match="gradient_checkpointing: ToyPrompted does not support gradient checkpointing"):
        Trainer(toy_model(), cfg(gradient_checkpointing=True), toy_data())


# ----- bad input ---------------------------------------------------------------------------------------------------
def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    class Exploding(ToyPrompted):
        calls = 0

        def training_step(self, batch):
            self.calls += 1
            loss = super().training_step(batch)
            return loss * float("nan") if self.calls == 8 else loss

    model = Exploding()
    trainer = Trainer(model, cfg(save_every_steps=3), toy_data(), run_dir=tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 8 \(epoch 1\).*keeps the checkpoint of step 6"):
        trainer.fit()
    assert torch.isfinite(model.prompts.weight).all()  # the bad step never reached the prompts
    meta = json.loads((tmp_path / "run/state/trainer_state.json").read_text())
    assert meta["progress"]["step"] == 6
    fresh = toy_model(seed=1)
    fresh.load_prompts(tmp_path / "run/last")
    assert all(torch.isfinite(v).all() for v in fresh.prompt_state_dict().values())


def test_a_diverging_loss_warns_once_naming_train_lr(capsys):
    # Adam at lr 1e4 keeps the loss finite while it grows by orders of magnitude: no error, one warning line.
    result = Trainer(toy_model(), cfg(lr=1e4), toy_data()).fit()
    assert math.isfinite(result["train_loss"]) and result["train_loss"] > 1e3
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1
    assert "diverging; lower train.lr (now 10000)" in lines[0] and "(step 1)" in lines[0]
    Trainer(toy_model(), cfg(), toy_data()).fit()
    assert "warning:" not in capsys.readouterr().err


def test_a_batch_larger_than_the_data_is_said_in_one_line(capsys):
    trainer = Trainer(toy_model(), cfg(batch_size=1_000_000, epochs=1), toy_data(40))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert lines == [
        "warning: train.batch_size 1000000 is larger than the 40 rows of the train data: each epoch is one step of "
        "40 rows; set train.batch_size to at most 40 to mean that"
    ]
    assert trainer.fit()["step"] == 1
    Trainer(toy_model(), cfg(batch_size=40), toy_data(40))
    Trainer(toy_model(), cfg(batch_size=1_000_000), None, toy_data(20, split="validation"))  # evaluation only
    assert "warning:" not in capsys.readouterr().err


def test_run_directory_holding_a_run_is_refused_unless_overwrite(tmp_path):
    Trainer(toy_model(), cfg(epochs=1), toy_data(), run_dir=tmp_path / "run").fit()
    (tmp_path / "run/notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match=r"already holds a run .*pass overwrite=True \(--overwrite\)"):
        Trainer(toy_model(), cfg(epochs=1), toy_data(), run_dir=tmp_path / "run")
    Trainer(toy_model(), cfg(epochs=1), toy_data(), run_dir=tmp_path / "run", overwrite=True)
    assert not (tmp_path / "run/metrics.jsonl").exists() and not (tmp_path / "run/last").exists()
    assert (tmp_path / "run/notes.txt").read_text() == "mine"  # only the run's own entries are replaced


def test_resume_needs_a_training_state_and_the_same_data_order(tmp_path):
    with pytest.raises(RunDirError, match="cannot resume: .* does not exist"):
        Trainer(toy_model(), cfg(), toy_data(), run_dir=tmp_path / "none", resume=True)
    Trainer(toy_model(), cfg(epochs=1), toy_data(), run_dir=tmp_path / "run").fit()
    with pytest.raises(RunDirError, match=r"data order would differ \(num_train: run has 40, now 44; batch_size: run has 8, now 4\)"):
        Trainer(toy_model(), cfg(epochs=1, batch_size=4), toy_data(44), run_dir=tmp_path / "run", resume=True)


def test_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="train dataset has no rows"):
        Trainer(toy_model(), cfg(), [])
    with pytest.raises(ValueError, match="eval dataset has no rows"):
        Trainer(toy_model(), cfg(), toy_data(), [])


def test_label_out_of_range_names_label_and_classes():
    data = toy_data()
    data.labels[5] = 7
    with pytest.raises(ValueError, match=r"label 7 is out of range for a model with 4 classes \(training batch \d+ of epoch 0\); labels must lie in \[0, 3\]"):
        Trainer(toy_model(), cfg(), data).fit()
    with pytest.raises(ValueError, match=r"label 7 is out of range for a model with 4 classes \(eval batch \d+\)"):
        Trainer(toy_model(), cfg(), None, data).evaluate()


def test_unknown_metric_and_fp16_on_cpu_are_refused():
    with pytest.raises(ValueError, match=r"metric: 'f1' is not among the eval metrics of ToyPrompted \(loss, accuracy\)"):
        Trainer(toy_model(), cfg(metric="f1", epochs=1), toy_data(), toy_data(8, split="validation")).fit()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="mixed_precision: fp16 needs a CUDA GPU"):
            Trainer(toy_model(), cfg(mixed_precision="fp16"), toy_data())


# ----- per-module learning rates -----------------------------------------------------------------------------------
def test_param_groups_give_each_module_its_rate_and_log_it(tmp_path):
    recorder = LrRecorder()
    config = cfg(lr=0.05, weight_decay=0.01, param_groups={"head": {"lr": 0.005, "weight_decay": 0.0}}, lr_scaling="linear", scheduler="constant")
    model = toy_model()
    trainer = Trainer(model, config, toy_data(), run_dir=tmp_path / "run", callbacks=[recorder])
    groups = trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["prompts", "head"]
    assert [p for g in groups for p in g["params"]] == list(model.prompt_parameters())  # each parameter once
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    trainer.fit()
    # lr_scaling applies to every group: global batch 8 / 256.
    assert recorder.lrs[1] == {"prompts": pytest.approx(0.05 * 8 / 256), "head": pytest.approx(0.005 * 8 / 256)}
    train_lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert train_lines[0]["lr/prompts"] == pytest.approx(0.05 * 8 / 256) and train_lines[0]["lr/head"] == pytest.approx(0.005 * 8 / 256)
    assert "lr" not in train_lines[0]


def test_param_groups_train_each_module_at_its_rate():
    # SGD without momentum: an update is -lr * grad, so with the head's rate at 0 the head cannot move.
    model = toy_model()
    head_before = model.head.weight.detach().clone()
    prompts_before = model.prompts.weight.detach().clone()
    trainer = Trainer(model, cfg(optimizer="sgd", momentum=0.0, epochs=1, param_groups={"head": {"lr": 1e-300}}), toy_data())
    trainer.fit()
    assert torch.equal(model.head.weight, head_before) and not torch.equal(model.prompts.weight, prompts_before)


def test_param_groups_naming_no_trainable_module_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"train.param_groups.heads: ToyPrompted has no trainable module 'heads'. Did you mean 'head'\? Its trainable modules are prompts, head"):
        Trainer(toy_model(), cfg(param_groups={"heads": {"lr": 0.1}}), toy_data(), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()

    class EmptyHead(ToyPrompted):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Identity()

        def forward_batch(self, batch):
            return self.backbone(batch["pixel_values"])[:, :4] + self.prompts().mean(0)[:4]

    with pytest.raises(ConfigError, match="train.param_groups.head: module 'head' of EmptyHead has no parameters of its own to train; remove it"):
        Trainer(EmptyHead(), cfg(param_groups={"head": {"lr": 0.1}}), toy_data())


# ----- checks before any work --------------------------------------------------------------------------------------
def test_metric_is_checked_against_the_model_before_the_run_directory_is_made(tmp_path):
    with pytest.raises(UserError, match=r"metric: 'token_accuracy' is not among the eval metrics of ToyPrompted \(loss, accuracy\); set train.metric to one of them"):
        Trainer(toy_model(), cfg(metric="token_accuracy"), toy_data(), toy_data(8, split="validation"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing blocks the corrected rerun

    class TokenMetrics(ToyPrompted):
        def metric_names(self):
            return ("loss", "token_accuracy")

        def eval_step(self, batch):
            out = super().eval_step(batch)
            return {"loss": out["loss"], "token_accuracy": out["accuracy"], "count": out["count"]}

    result = Trainer(TokenMetrics(), cfg(metric="token_accuracy", epochs=1), toy_data(), toy_data(8, split="validation")).fit()
    assert result["best"]["metric"] == "token_accuracy"
    assert toy_model().metric_names() == ("loss", "accuracy")


def test_metric_names_that_lie_about_eval_step_get_a_clear_error():
    class Liar(ToyPrompted):
        def metric_names(self):
            return ("loss", "f1")

    with pytest.raises(UserError, match=r"Liar.eval_step reported loss, accuracy but not train.metric 'f1'"):
        Trainer(Liar(), cfg(metric="f1", epochs=1), toy_data(), toy_data(8, split="validation")).fit()


def test_unwritable_run_directory_is_refused_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError, match=rf"run directory '{blocker}/run' cannot be written .*choose a writable folder \(-o/--output, or run_dir=...\) or make that folder writable"):
        Trainer(toy_model(), cfg(), toy_data(), run_dir=blocker / "run")

    # A read-only folder (this test may run as root, who may write anywhere: the refusal is simulated).
    import promptcore.runs

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(promptcore.runs.tempfile, "mkstemp", refuse)
    model = toy_model()
    before = model.prompts.weight.detach().clone()
    with pytest.raises(RunDirError, match=rf"run directory '{tmp_path}/ro/run' cannot be written \(Permission denied: {tmp_path}/ro\)"):
        Trainer(model, cfg(), toy_data(), run_dir=tmp_path / "ro" / "run")
    assert torch.equal(model.prompts.weight, before)


def test_a_disk_without_room_for_a_checkpoint_is_refused_with_both_numbers(tmp_path, monkeypatch):
    import shutil as shutil_module

    import promptcore.runs

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(promptcore.runs.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(RunDirError, match=r"its disk has 1.0 KiB free, a checkpoint needs about 139.6 KiB \(last/ and best/ 4.5 KiB each, state/ 65.4 KiB with the adamw state"):
        Trainer(toy_model(), cfg(), toy_data(), run_dir=tmp_path / "run")
    monkeypatch.setattr(promptcore.runs.shutil, "disk_usage", lambda path: usage._replace(free=10**9))
    trainer = Trainer(toy_model(), cfg(), toy_data(), run_dir=tmp_path / "run2")
    needed, _ = trainer._checkpoint_bytes
    trainer.fit()
    on_disk = sum(f.stat().st_size for d in ("last", "best", "state") if (tmp_path / "run2" / d).exists() for f in (tmp_path / "run2" / d).iterdir())
    assert on_disk <= needed  # the estimate covers what a checkpoint writes


def test_leftovers_of_interrupted_writes_are_cleaned_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    Trainer(toy_model(), cfg(epochs=1), toy_data(), run_dir=run).fit()
    # What kills between the steps of atomic writes leave behind, and files that are not ours.
    (run / ".metrics.jsonl.ab12cd_3.tmp").write_text("torn")
    (run / ".state.x9y8z7w6.tmp").mkdir()
    (run / ".state.x9y8z7w6.tmp" / "tensors.pt").write_text("half")
    (run / ".write-check.0a1b2c3d.tmp").write_text("")
    (run / "last.old").mkdir()
    (run / ".notes.ab12cd34.tmp").write_text("mine")
    (run / ".metrics.jsonl.tmp").write_text("mine too")
    Trainer(toy_model(), cfg(epochs=2), toy_data(), run_dir=run, resume=True).fit()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".") or p.name.endswith(".old")) == [".metrics.jsonl.tmp", ".notes.ab12cd34.tmp"]

    # A kill between the two renames of a folder swap: the old folder is put back.
    (run / "last").rename(run / "last.old")
    Trainer(toy_model(), cfg(epochs=2), toy_data(), run_dir=run, resume=True)
    assert (run / "last").is_dir() and not (run / "last.old").exists()


def test_curves_of_a_single_logged_point_are_drawn_with_markers():
    from promptcore.plots import draw_curves

    fig = draw_curves([{"split": "train", "step": 1, "loss": 1.5, "lr": 0.1}, {"split": "eval", "step": 1, "loss": 1.4, "accuracy": 0.5}], "accuracy")
    ax_loss, ax_metric = fig.axes
    for line in [*ax_loss.lines, *ax_metric.lines]:
        assert len(line.get_xdata()) == 1 and line.get_marker() not in ("None", None, "", " ")
