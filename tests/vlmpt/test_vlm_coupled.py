"""``vlm_coupled``: language prompts in the language model and vision prompts projected from them in the vision
tower of LLaVA (CLIP) and of Qwen2-VL / Qwen2.5-VL (packed), checked in float64 against a hand-written forward,
against ``vlm_vpt`` where the two coincide, and through caching, padding, training, save / load and the CLI."""

import contextlib

import pytest
import torch

import vlmpt
from promptcore import TrainConfig, Trainer, load_config, wrap
from promptcore.errors import UnsupportedModelError, UserError
from vlmpt.cli import VLMRecipe, main
from vlmpt.run_config import VLMRunConfig
from vlmpt.synthetic import IMAGE, collate_examples, synthetic_rows, tiny_backbone, tiny_examples

from test_vlm_vision_prompts import QWEN_TOWER, frozen_logits, qwen_features, qwen_logits

SMOKE = "configs/smoke/vlmpt_tiny.yaml"


def as64(batch: dict) -> dict:
    return {k: v.double() if k == "pixel_values" else v for k, v in batch.items()}


def reference_vision_prompts(model) -> torch.Tensor:
    """``[depth, m, width]``: before tower layer i < depth the prompts ``text[i] @ W_i^T + b_i``, then the free
    vision prompts."""
    text = model.prompts.text.weight
    vision = [text[i] @ model.prompts.proj[i].weight.T + model.prompts.proj[i].bias for i in range(model.config.depth)]
    if model.config.vision_tokens:
        vision = [torch.cat([v, model.prompts.vision.weight[i]]) for i, v in enumerate(vision)]
    return torch.stack(vision)


@contextlib.contextmanager
def replaced_language_rows(model):
    """Within it, the hidden states of the first ``num_tokens`` rows entering language-model layer i (0 < i <
    depth) are layer i's language prompts."""
    n, text = model.config.num_tokens, model.prompts.text.weight

    def replace(i):
        def hook(module, args, kwargs):
            h = args[0].clone()
            h[:, :n] = text[i]
            return (h, *args[1:]), kwargs

        return hook

    lm = model.backbone.model.language_model
    handles = [lm.layers[i].register_forward_pre_hook(replace(i), with_kwargs=True) for i in range(1, model.config.depth)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def reference_logits(model, example: dict) -> torch.Tensor:
    """One example alone, by hand. Vision: the CLIP tower's embeddings; the :func:`reference_vision_prompts` after
    the class token, inserted before layer 0 and replacing the prompt rows after; the feature layer taken without
    prompts and class token, projected into the image placeholder rows. Language: the first layer's prompts as rows
    before the sequence, their hidden states replaced by layer i's prompts before language-model layer i < depth
    (:func:`replaced_language_rows`); 1-D positions from 0."""
    bb, cfg = model.backbone, model.config
    text = model.prompts.text.weight
    n, depth = cfg.num_tokens, cfg.depth
    vision = reference_vision_prompts(model)
    nv = vision.shape[1]
    tower = bb.model.vision_tower
    x = tower.pre_layrnorm(tower.embeddings(example["pixel_values"].double()))
    states = [x]
    for i, layer in enumerate(tower.encoder.layers):
        if i < depth:
            x = torch.cat([x[:, :1], vision[i][None], x[:, 1 if i == 0 else 1 + nv :]], dim=1)
        x = layer(x, None)
        x = x[0] if isinstance(x, tuple) else x
        states.append(x)
    features = states[bb.config.vision_feature_layer][:, 1 + nv :]
    ids = example["input_ids"][None]
    embeds = bb.get_input_embeddings()(ids).clone()
    embeds[0, ids[0] == IMAGE] = bb.model.multi_modal_projector(features)[0]
    embeds = torch.cat([text[0][None], embeds], dim=1)
    with replaced_language_rows(model):
        hidden = bb.model.language_model(inputs_embeds=embeds, position_ids=torch.arange(embeds.shape[1])[None]).last_hidden_state
    return bb.lm_head(hidden)[0, n:]


@pytest.mark.parametrize("depth, vision_tokens, feature_layer", [(1, 0, -1), (2, 2, -2)])
def test_prompted_logits_equal_the_hand_written_forward_in_float64(depth, vision_tokens, feature_layer):
    backbone = tiny_backbone("llava").double()
    backbone.config.vision_feature_layer = feature_layer  # -2: an inner layer's states, as LLaVA-1.5 reads them
    model = wrap(backbone, vlmpt.VLMCoupledConfig(num_tokens=2, depth=depth, vision_tokens=vision_tokens, init_std=1.0, seed=3)).double()
    examples = tiny_examples(backbone, 3, seed=5)
    for side in ("left", "right"):
        batch = as64(collate_examples(examples, side))
        logits = model(**batch)
        for row, example in enumerate(examples):
            got = logits[row, batch["attention_mask"][row] == 1]
            torch.testing.assert_close(got, reference_logits(model, example), rtol=0, atol=1e-10)
    batch = as64(collate_examples(examples, "left"))
    cached, scores = model.generate(4, return_scores=True, **batch)
    plain, plain_scores = model.generate(4, use_cache=False, return_scores=True, **batch)
    assert torch.equal(cached, plain)
    torch.testing.assert_close(scores, plain_scores, rtol=0, atol=1e-10)


@pytest.mark.parametrize("model_type, depth, vision_tokens", [("qwen2_vl", 1, 1), ("qwen2_5_vl", 2, 0)])
def test_on_qwen_prompted_logits_equal_the_hand_built_reference_in_float64(model_type, depth, vision_tokens):
    backbone = tiny_backbone(model_type, vision_config=QWEN_TOWER).double()
    model = wrap(backbone, vlmpt.VLMCoupledConfig(num_tokens=2, depth=depth, vision_tokens=vision_tokens, init_std=1.0, seed=3)).double()
    examples = tiny_examples(backbone, 3, seed=5)  # images of 4 x 4 and 4 x 8 patches: one and two windows on Qwen2.5-VL
    with replaced_language_rows(model):
        references = [
            qwen_logits(backbone, e, qwen_features(backbone.model.visual, e, reference_vision_prompts(model)), model.prompts.text.weight[0]) for e in examples
        ]
    for side in ("left", "right"):
        batch = as64(collate_examples(examples, side))
        logits = model(**batch)
        for row, reference in enumerate(references):
            torch.testing.assert_close(logits[row, batch["attention_mask"][row] == 1], reference, rtol=0, atol=1e-10)
    cached, scores = model.generate(4, return_scores=True, **batch)
    plain, plain_scores = model.generate(4, use_cache=False, return_scores=True, **batch)
    assert torch.equal(cached, plain)
    torch.testing.assert_close(scores, plain_scores, rtol=0, atol=1e-10)


def test_a_zero_projection_gives_zero_vision_prompts_and_depth_one_is_vpt_shallow_with_prompt_rows():
    backbone = tiny_backbone("llava").double()
    coupled = wrap(backbone, vlmpt.VLMCoupledConfig(num_tokens=3, depth=1, init_std=1.0)).double()
    vpt = wrap(backbone, vlmpt.VLMVisionPromptConfig(num_tokens=3, lm_tokens=3)).double()
    with torch.no_grad():
        for p in coupled.prompts.proj.parameters():
            p.zero_()
        vpt.prompts.weight.zero_()
        vpt.lm_prompts.weight.copy_(coupled.prompts.text.weight[0])
    assert all(torch.equal(v, torch.zeros(3, 32, dtype=torch.float64)) for v in coupled.vision_prompts())
    batch = as64(collate_examples(tiny_examples(backbone, 3, seed=1), "left"))
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(coupled(**batch)[real], vpt(**batch)[real], rtol=0, atol=1e-10)
    coupled.training_step(batch).backward()
    # the coupling still learns: the language prompts reach the vision tower through the zero maps' gradients
    assert coupled.prompts.proj[0].weight.grad.abs().sum() > 0 and coupled.prompts.text.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("model_type", ["llava", "qwen2_5_vl"])
def test_a_training_step_changes_only_the_prompts_and_projections(model_type):
    backbone = tiny_backbone(model_type, vision_config=QWEN_TOWER if model_type != "llava" else None)
    batch = collate_examples(tiny_examples(backbone, 2))
    frozen = frozen_logits(backbone, batch)
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = wrap(backbone, vlmpt.VLMCoupledConfig(num_tokens=2, depth=2, vision_tokens=1, init_std=1.0))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == [
        "prompts.proj.0.bias", "prompts.proj.0.weight", "prompts.proj.1.bias", "prompts.proj.1.weight", "prompts.text.weight", "prompts.vision.weight",
    ]
    # MaPLe's initialisation: the deeper maps start as copies of one
    assert torch.equal(model.prompts.proj[1].weight, wrap(backbone, vlmpt.VLMCoupledConfig(depth=2)).prompts.proj[1].weight)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    Trainer(model, TrainConfig(max_steps=1, batch_size=2, lr=0.1, progress_bar=False, tensorboard=False), tiny_examples(backbone, 2), None, collate_examples).fit()
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert all(torch.equal(v, weights[k]) for k, v in backbone.state_dict().items())
    assert torch.equal(frozen_logits(backbone, batch), frozen)  # no hook is left on either tower
    assert not torch.allclose(model(**batch), frozen, atol=1e-3)


@pytest.mark.parametrize("name", ["random:llava", "random:qwen2_vl"])
def test_a_trained_coupled_prompt_saves_and_loads_bitwise(tmp_path, name):
    cfg = load_config(VLMRunConfig, SMOKE, [
        f"model.name={name}", "prompt.method=vlm_coupled", "prompt.depth=2", "prompt.vision_tokens=1", "data.num_samples=8", "data.eval_split=null",
    ])
    recipe = VLMRecipe()
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    Trainer(model, TrainConfig(max_steps=2, batch_size=4, lr=0.3, progress_bar=False, tensorboard=False), data.train, None, data.collate_fn).fit()
    loaded = vlmpt.load_prompted(model.save_prompts(tmp_path / "coupled"))
    assert isinstance(loaded, vlmpt.VLMCoupledModel) and loaded.config.depth == 2 and loaded.config.vision_tokens == 1
    batch = data.collate_fn([data.train[i] for i in range(4)])
    assert torch.equal(model.eval()(**batch), loaded(**batch))


def test_towers_that_are_neither_vits_nor_packed_too_deep_and_bad_configs_are_refused():
    with pytest.raises(UnsupportedModelError, match=r"the vision tower of Idefics3ForConditionalGeneration .* \(each of an image's tiles .*\); vlm_coupled supports the CLIP and SigLIP towers"):
        wrap(tiny_backbone("idefics3"), vlmpt.VLMCoupledConfig(depth=1))
    with pytest.raises(UserError, match=r"depth: 3 is more than the layers of .* \(2 in the language model, 2 in the vision tower\); use at most 2"):
        wrap(tiny_backbone("llava"), vlmpt.VLMCoupledConfig(depth=3))
    with pytest.raises(UserError, match="depth: must be a positive number of prompted layers"):
        vlmpt.VLMCoupledConfig(depth=0)
    with pytest.raises(UserError, match=r"vision_tokens: must be a number of free vision prompts \(0: none\)"):
        vlmpt.VLMCoupledConfig(vision_tokens=-1)
    with pytest.raises(UserError, match="num_tokens: must be a positive number of prompt rows"):
        vlmpt.VLMCoupledConfig(num_tokens=0)


@pytest.mark.parametrize("name", ["random:llava", "random:qwen2_5_vl"])
def test_the_command_line_trains_evaluates_and_generates_with_coupled_prompts(tmp_path, capsys, name):
    fast = ["--set", "train.max_steps=1", "--set", "data.num_samples=4", "--set", "data.num_eval_samples=2", "--set", "train.batch_size=2"]
    coupled = ["--set", f"model.name={name}", "--set", "prompt.method=vlm_coupled", "--set", "prompt.depth=2"]
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *fast, *coupled]) == 0
    assert main(["eval", "-c", SMOKE, "--prompts", str(run / "best"), *fast, *coupled]) == 0
    image = tmp_path / "red.png"
    synthetic_rows(1)["image"][0].save(image)
    capsys.readouterr()
    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), str(image), "--question", "what colour is it ?", *fast, *coupled]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[1] {image}" and out[1].startswith("    ")
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "deep"), *fast, *coupled, "--set", "prompt.depth=5"]) == 2
    assert "depth: 5 is more than the layers" in capsys.readouterr().err
