"""``vlm_vpt``: VPT-shallow / VPT-deep in LLaVA's CLIP vision tower (optionally with prompt rows in the language
model), checked in float64 against a hand-written forward, and through padding, caching, training, save / load and
the CLI."""

import pytest
import torch

import vlmpt
from promptcore import TrainConfig, Trainer, load_config, wrap
from promptcore.errors import UnsupportedModelError, UserError
from vlmpt.cli import VLMRecipe
from vlmpt.run_config import VLMRunConfig
from vlmpt.synthetic import IMAGE, collate_examples, tiny_backbone, tiny_examples


def as64(batch: dict) -> dict:
    return {k: v.double() if k == "pixel_values" else v for k, v in batch.items()}


def reference_logits(model, example: dict) -> torch.Tensor:
    """One example alone, by hand: the CLIP tower's embeddings, the prompts after the class token (fresh before
    every layer when deep), each layer run as the tower runs it, the feature layer taken without prompts and class
    token, projected into the image placeholder rows; the language-model prompt rows before the sequence; 1-D
    positions from 0."""
    bb, cfg = model.backbone, model.config
    vision = bb.model.vision_tower
    n = cfg.num_tokens
    prompts = model.prompts.weight if cfg.deep else model.prompts.weight[None]
    x = vision.pre_layrnorm(vision.embeddings(example["pixel_values"].double()))
    states = [x]
    for i, layer in enumerate(vision.encoder.layers):
        if i == 0 or cfg.deep:
            x = torch.cat([x[:, :1], prompts[i][None], x[:, 1 if i == 0 else 1 + n :]], dim=1)
        x = layer(x, None)
        x = x[0] if isinstance(x, tuple) else x
        states.append(x)
    features = states[bb.config.vision_feature_layer][:, 1 + n :]  # without the class token and the prompts
    ids = example["input_ids"][None]
    embeds = bb.get_input_embeddings()(ids).clone()
    embeds[0, ids[0] == IMAGE] = bb.model.multi_modal_projector(features)[0]
    m = cfg.lm_tokens
    if m:
        embeds = torch.cat([model.lm_prompts.weight[None], embeds], dim=1)
    hidden = bb.model.language_model(inputs_embeds=embeds, position_ids=torch.arange(embeds.shape[1])[None]).last_hidden_state
    return bb.lm_head(hidden)[0, m:]


@pytest.mark.parametrize("deep, lm_tokens, feature_layer", [(False, 0, -1), (True, 0, -2), (True, 2, -1)])
def test_prompted_logits_equal_the_hand_written_forward_in_float64(deep, lm_tokens, feature_layer):
    backbone = tiny_backbone("llava").double()
    backbone.config.vision_feature_layer = feature_layer  # -2: an inner layer's states, as LLaVA-1.5 reads them
    model = wrap(backbone, vlmpt.VLMVisionPromptConfig(num_tokens=3, deep=deep, lm_tokens=lm_tokens, init_std=1.0)).double()
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


def test_only_the_prompts_train_and_the_backbone_alone_stays_the_frozen_model():
    backbone = tiny_backbone("llava")
    batch = collate_examples(tiny_examples(backbone, 2))
    frozen = backbone(**batch).logits
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = wrap(backbone, vlmpt.VLMVisionPromptConfig(num_tokens=2, deep=True, lm_tokens=1, init_std=1.0))
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == ["lm_prompts.weight", "prompts.weight"]
    assert tuple(model.prompts.weight.shape) == (2, 2, 32)  # 2 tower layers, 2 tokens, the tower's width
    model.training_step(batch).backward()
    assert model.prompts.weight.grad.abs().sum() > 0 and model.lm_prompts.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    Trainer(model, TrainConfig(max_steps=2, batch_size=2, lr=0.1, progress_bar=False, tensorboard=False), tiny_examples(backbone, 4), None, collate_examples).fit()
    assert all(torch.equal(v, weights[k]) for k, v in backbone.state_dict().items())
    assert torch.equal(backbone(**batch).logits, frozen)  # no hook is left on the tower
    assert not torch.allclose(model(**batch), frozen, atol=1e-3)


def test_a_trained_vision_prompt_saves_and_loads_bitwise(tmp_path):
    cfg = load_config(VLMRunConfig, "configs/smoke/vlmpt_tiny.yaml", [
        "model.name=random:llava", "prompt.method=vlm_vpt", "prompt.deep=true", "prompt.lm_tokens=2", "data.num_samples=8", "data.eval_split=null",
    ])
    recipe = VLMRecipe()
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    Trainer(model, TrainConfig(max_steps=2, batch_size=4, lr=0.3, progress_bar=False, tensorboard=False), data.train, None, data.collate_fn).fit()
    loaded = vlmpt.load_prompted(model.save_prompts(tmp_path / "vpt"))
    assert isinstance(loaded, vlmpt.VLMVisionPromptModel) and loaded.config.deep
    batch = data.collate_fn([data.train[i] for i in range(4)])
    assert torch.equal(model.eval()(**batch), loaded(**batch))


def test_towers_that_are_not_vits_and_bad_configs_are_refused():
    with pytest.raises(UnsupportedModelError, match=r"the vision tower of Qwen2VLForConditionalGeneration .* is not a ViT that VPT prompts can extend"):
        wrap(tiny_backbone("qwen2_vl"), vlmpt.VLMVisionPromptConfig())
    with pytest.raises(UserError, match="num_tokens: must be a positive number of vision prompt tokens"):
        vlmpt.VLMVisionPromptConfig(num_tokens=0)
    with pytest.raises(UserError, match=r"lm_tokens: must be a number of language-model prompt rows \(0: none\)"):
        vlmpt.VLMVisionPromptConfig(lm_tokens=-1)


def test_the_command_line_trains_vision_prompts(tmp_path, capsys):
    from vlmpt.cli import main

    fast = ["--set", "train.max_steps=1", "--set", "data.num_samples=4", "--set", "data.num_eval_samples=2", "--set", "train.batch_size=2"]
    vpt = ["--set", "model.name=random:llava", "--set", "prompt.method=vlm_vpt", "--set", "prompt.deep=true"]
    assert main(["train", "-c", "configs/smoke/vlmpt_tiny.yaml", "-o", str(tmp_path / "run"), *fast, *vpt]) == 0
    capsys.readouterr()
    recorded = vlmpt.load_prompted(tmp_path / "run" / "best")
    assert isinstance(recorded, vlmpt.VLMVisionPromptModel) and recorded.config.deep
    assert main(["train", "-c", "configs/smoke/vlmpt_tiny.yaml", "-o", str(tmp_path / "qwen"), *fast, "--set", "prompt.method=vlm_vpt"]) == 2
    assert "is not a ViT that VPT prompts can extend" in capsys.readouterr().err
