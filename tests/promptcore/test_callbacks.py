"""Callbacks: the hooks and their order, stopping (early stopping, resumable), the step timer, the registry by name
and its errors. Uses the toy model of scripts/toy_prompted.py."""

import json

import pytest
import torch
from safetensors.torch import load_file


from toy_prompted import SigintAt, StopAt, toy_data, toy_model  # noqa: E402

from promptcore import TrainConfig, Trainer  # noqa: E402
from promptcore.callbacks import CALLBACKS, Callback, EarlyStopping, StepTimer, build_callback  # noqa: E402
from promptcore.config import ConfigError, load_config  # noqa: E402
from promptcore.errors import UserError  # noqa: E402
from promptcore.trainer import TrainingInterrupted  # noqa: E402


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=0.05, progress_bar=False, tensorboard=False, log_every_steps=2)
    return TrainConfig(**{**base, **kw})


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_init(self, trainer):
        self.events.append(("init", trainer.run is not None and trainer.run.config.exists()))

    def on_train_begin(self, trainer):
        self.events.append(("train_begin", trainer.progress.step))

    def on_step_end(self, trainer, info):
        self.events.append(("step", info.step, info.epoch, info.samples))
        assert info.seconds > 0 and info.loss == info.loss

    def on_log(self, trainer, record):
        self.events.append(("log", record["split"], record["step"]))

    def on_epoch_end(self, trainer):
        self.events.append(("epoch_end", trainer.progress.epoch))

    def on_evaluate(self, trainer, metrics):
        self.events.append(("evaluate", trainer.progress.step, sorted(metrics)))

    def on_save(self, trainer, path, kind):
        self.events.append(("save", kind, path.name, path.is_dir()))

    def on_train_end(self, trainer):
        self.events.append(("train_end", trainer.progress.step))


def test_hooks_run_in_order_with_what_they_promise(tmp_path):
    recorder = Recorder()
    # 40 rows, batch 8: 5 steps per epoch; train lines every 2 steps.
    Trainer(toy_model(), cfg(), toy_data(), toy_data(12, split="validation"), run_dir=tmp_path / "run", callbacks=[recorder]).fit()
    events = recorder.events
    assert events[0] == ("init", False)  # before the run directory was written
    assert events[1] == ("train_begin", 0) and events[-1] == ("train_end", 10)
    first_epoch = events[2 : events.index(("save", "last", "last", True)) + 1]
    assert first_epoch == [
        ("step", 1, 0, 8), ("step", 2, 0, 8), ("log", "train", 2), ("step", 3, 0, 8), ("step", 4, 0, 8),
        ("log", "train", 4), ("step", 5, 0, 8), ("log", "train", 5), ("log", "epoch", 5), ("epoch_end", 0),
        ("log", "eval", 5), *[e for e in first_epoch if e[:2] == ("save", "best")], ("evaluate", 5, ["accuracy", "count", "loss"]),
        ("save", "last", "last", True),
    ]
    assert ("save", "best", "best", True) in first_epoch
    assert sum(e[0] == "step" for e in events) == 10


def test_a_stop_request_ends_the_run_saved_and_it_stays_finished(tmp_path):
    run = tmp_path / "run"
    result = Trainer(toy_model(), cfg(epochs=5), toy_data(), toy_data(12, split="validation"), run_dir=run, callbacks=[StopAt(7, "stop at 7")]).fit()
    assert result["stopped"] == "stop at 7" and result["step"] == 7
    assert result["eval"]["count"] == 12  # the stopped run is evaluated at its last step
    state = json.loads((run / "state/trainer_state.json").read_text())
    assert state["progress"]["step"] == 7 and state["progress"]["stop_reason"] == "stop at 7"
    assert json.loads((run / "last/prompt_config.json").read_text())["step"] == 7
    lines = (run / "metrics.jsonl").read_text()
    again = Trainer(toy_model(), cfg(epochs=5), toy_data(), toy_data(12, split="validation"), run_dir=run, resume=True).fit()
    assert again["step"] == 7 and again["stopped"] == "stop at 7"
    assert (run / "metrics.jsonl").read_text() == lines


def early_stopping_run(run_dir, resume=False, interrupt_at=0):
    """Eval loss must fall by more than 10 to count as better: after the first evaluation none does, so with
    patience 2 the run stops after the third epoch (step 15 of 50)."""
    callbacks = [EarlyStopping(patience=2, min_delta=10.0), StepTimer()]
    if interrupt_at:
        callbacks.append(SigintAt(interrupt_at))
    config = cfg(epochs=10, metric="loss", metric_mode="min", save_every_steps=2)
    trainer = Trainer(toy_model(), config, toy_data(), toy_data(12, split="validation"), run_dir=run_dir, resume=resume, callbacks=callbacks)
    return trainer, callbacks


def test_early_stopping_stops_and_a_resumed_run_stops_where_the_uninterrupted_one_does(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer, (stopper, timer) = early_stopping_run(tmp_path / "ref")
        reference = trainer.fit()
        assert reference["step"] == 15 and reference["stopped"].startswith("early_stopping: eval loss did not improve by more than 10.0 for 2 evaluations")
        assert stopper.bad_evals == 2 and stopper.best_step == 5
        assert sorted(timer.times) == list(range(1, 16))

        # Ctrl-C after step 8 (epoch 1, after one evaluation): the stopper's state must come back on resume, or the
        # resumed run would count its patience afresh and stop later.
        run = tmp_path / "run"
        trainer, _ = early_stopping_run(run, interrupt_at=8)
        with pytest.raises(TrainingInterrupted, match="interrupted at step 9"):
            trainer.fit()
        assert json.loads((run / "state/trainer_state.json").read_text())["callbacks"]["EarlyStopping"] == {"best": pytest.approx(reference_best(tmp_path / "ref")), "best_step": 5, "bad_evals": 0}
        trainer, (stopper, _) = early_stopping_run(run, resume=True)
        result = trainer.fit()
    finally:
        torch.set_num_threads(threads)
    assert result["step"] == 15 and result["stopped"] == reference["stopped"]
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "ref/metrics.jsonl").read_text()
    ours, theirs = load_file(run / "last/prompts.safetensors"), load_file(tmp_path / "ref/last/prompts.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    # The step timer's file holds every step once: the resumed run dropped what it redid.
    steps = [json.loads(line)["step"] for line in (run / "step_times.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 16))


def reference_best(run_dir):
    return next(json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["split"] == "eval")


def test_step_timer_writes_each_step_time_into_the_run_directory(tmp_path):
    result = Trainer(toy_model(), cfg(callbacks=["step_timer"]), toy_data(), run_dir=tmp_path / "run").fit()
    lines = [json.loads(line) for line in (tmp_path / "run/step_times.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, result["step"] + 1))
    assert all(r["seconds"] > 0 for r in lines) and [r["epoch"] for r in lines] == [0] * 5 + [1] * 5


def test_callbacks_by_name_from_yaml():
    config = load_config(TrainConfig, {"callbacks": ["step_timer", {"name": "early_stopping", "patience": 3, "min_delta": 0.01}]})
    trainer = Trainer(toy_model(), config, toy_data(), toy_data(12, split="validation"))
    stoppers = [cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)]
    assert len(stoppers) == 1 and (stoppers[0].patience, stoppers[0].min_delta, stoppers[0].metric) == (3, 0.01, "accuracy")
    assert any(isinstance(cb, StepTimer) for cb in trainer.callbacks)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("early_stoping", r"callbacks\[0\]: unknown callback 'early_stoping'. Did you mean 'early_stopping'\? Known: early_stopping, .*step_timer"),
        ({"name": "early_stopping", "patiance": 3}, r"callbacks\[0\].patiance: unknown argument of callback 'early_stopping'. Did you mean 'patience'\?"),
        ({"name": "early_stopping", "patience": 0}, r"callbacks\[0\] \(early_stopping\): patience: must be an integer >= 1, got 0"),
        ({"name": "early_stopping", "min_delta": float("nan")}, r"min_delta: must be a finite number >= 0, got nan"),
        ({"patience": 3}, r"callbacks\[0\]: a callback mapping needs 'name'"),
        (3, r"callbacks\[0\]: expected str or dict\[str, Any\], found 3"),
    ],
)
def test_bad_callback_specs_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, {"callbacks": [spec]})


def test_a_registered_callback_is_usable_by_name():
    class Counter(Callback):
        def __init__(self, every: int = 1):
            self.every, self.count = every, 0

        def on_step_end(self, trainer, info):
            self.count += info.step % self.every == 0

    with CALLBACKS.temporarily("counter", Counter):
        trainer = Trainer(toy_model(), cfg(epochs=1, callbacks=[{"name": "counter", "every": 2}]), toy_data())
        trainer.fit()
        assert trainer.callbacks[-1].count == 2
        with pytest.raises(UserError, match=r"callbacks.evry: unknown argument of callback 'counter'. Did you mean 'every'\? It takes every"):
            build_callback({"name": "counter", "evry": 2})
    with pytest.raises(TypeError, match="is not a promptcore.callbacks.Callback"):
        Trainer(toy_model(), cfg(), toy_data(), callbacks=[object()])


def test_early_stopping_is_checked_before_the_run_directory_is_written(tmp_path):
    with pytest.raises(UserError, match="early_stopping: needs evaluations during training"):
        Trainer(toy_model(), cfg(callbacks=["early_stopping"]), toy_data(), run_dir=tmp_path / "a")
    with pytest.raises(UserError, match=r"early_stopping: metric 'f1' is not among the eval metrics of ToyPrompted \(loss, accuracy\)"):
        Trainer(toy_model(), cfg(callbacks=[{"name": "early_stopping", "metric": "f1"}]), toy_data(), toy_data(8, split="validation"), run_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
