"""Every registered prompt method through the same contract (see :mod:`harness`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import cases_text  # noqa: F401  (registers the text methods' cases)
import cases_vision  # noqa: F401  (registers the vision and CLIP methods' cases)
import cases_vlm  # noqa: F401  (registers the vision-language methods' cases)
from harness import CASES, Spy, method_of, to_float64, variants
from promptcore import METHODS, PromptFileError, TrainConfig, Trainer
from promptcore.files import TENSORS_FILE
from promptcore.plugins import load_plugins

load_plugins()
TRAINING = [name for name, m in METHODS.items() if m.trains] + [v for v in variants() if METHODS.get(method_of(v)).trains]
FROZEN = [name for name, m in METHODS.items() if not m.trains] + [v for v in variants() if not METHODS.get(method_of(v)).trains]
FAST = [name for name in METHODS.names() if name in CASES and CASES.get(name).fast_spy is not None]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_has_a_contract_case(name):
    assert name in CASES, f"method {name!r} is registered but has no MethodCase in tests/contract/cases_*.py"


@pytest.mark.parametrize("name", TRAINING)
def test_only_prompt_parameters_receive_gradients(name):
    case = CASES.get(name)
    model = case.build(0, None)
    model.train()
    model.training_step(case.batch(model)).backward()
    prompt_ids = {id(p) for p in model.prompt_parameters()}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad, "no parameter received a gradient"
    assert {n for n, p in model.named_parameters() if p.grad is not None and id(p) not in prompt_ids} == set()
    assert all(p.grad is not None for p in model.prompt_parameters() if p.requires_grad), "a prompt parameter got no gradient"


@pytest.mark.parametrize("name", TRAINING)
def test_training_leaves_the_backbone_bitwise_unchanged(name):
    case = CASES.get(name)
    model = case.build(0, None)
    before = {k: v.clone() for k, v in model.backbone.state_dict(keep_vars=False).items()}
    prompts_before = [p.detach().clone() for p in model.prompt_parameters()]
    dataset, collate = case.data(model)
    config = TrainConfig(epochs=1, max_steps=2, batch_size=4, lr=0.05, progress_bar=False, tensorboard=False, eval_every_epochs=0)
    Trainer(model, config, dataset, None, collate).fit()
    after = model.backbone.state_dict()
    assert sorted(after) == sorted(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    assert any(not torch.equal(a, p.detach()) for a, p in zip(prompts_before, model.prompt_parameters())), "training changed no prompt"


@pytest.mark.parametrize("name", FROZEN)
def test_methods_that_do_not_train_have_no_prompt_parameters(name):
    model = CASES.get(name).build(0, None)
    assert list(model.prompt_parameters()) == []


@pytest.mark.parametrize("name", TRAINING)
def test_save_then_load_gives_identical_outputs(name, tmp_path):
    case = CASES.get(name)
    trained = case.build(0, None)
    with torch.no_grad():  # move every prompt away from its initialisation, so a load that does nothing shows
        for p in trained.prompt_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    trained.save_prompts(tmp_path / "p")
    fresh = case.build(1, None)
    batch = case.batch(trained)
    trained.eval(), fresh.eval()
    with torch.no_grad():
        expected = case.output(trained, batch)
        assert not torch.equal(case.output(fresh, batch), expected), "seed 1 builds the same prompts as seed 0"
        fresh.load_prompts(tmp_path / "p")
        assert torch.equal(case.output(fresh, batch), expected)


@pytest.mark.parametrize("name", TRAINING)
def test_foreign_and_corrupt_prompt_folders_are_refused(name, tmp_path):
    case = CASES.get(name)
    model = case.build(0, None)
    case.foreign(0).save_prompts(tmp_path / "foreign")
    with pytest.raises(PromptFileError):
        model.load_prompts(tmp_path / "foreign")
    model.save_prompts(tmp_path / "own")
    tensors = tmp_path / "own" / TENSORS_FILE
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    with pytest.raises(PromptFileError, match="truncated or corrupt"):
        model.load_prompts(tmp_path / "own")


@pytest.mark.parametrize("name", FAST)
def test_fast_path_equals_plain_path_in_float64(name):
    case = CASES.get(name)
    results = {}
    for fast in (True, False):
        model = case.build(0, fast).double()
        model.eval()
        batch = to_float64(case.batch(model))
        with Spy(case.fast_spy) as spy:
            out = case.output(model, batch)
            out.pow(2).sum().backward()
        assert (spy.calls > 0) == fast, f"{case.fast_spy} ran {spy.calls} times with fast={fast}"
        grads = [p.grad.clone() if p.grad is not None else None for p in model.prompt_parameters()]
        results[fast] = (out.detach(), grads)
    (fast_out, fast_grads), (plain_out, plain_grads) = results[True], results[False]
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-10, atol=1e-10)
    assert len(fast_grads) == len(plain_grads)
    for a, b in zip(fast_grads, plain_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_the_case_registry_is_strict():
    case = next(iter(CASES.items()))[1]
    with pytest.raises(KeyError, match="already registered"):
        CASES.add(next(iter(CASES.names())), dataclasses.replace(case))
