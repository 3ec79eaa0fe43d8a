"""``vlm_prefix``: deep prompts (per-layer keys and values) in the language model of each architecture, checked in
float64 against the shallow prompt whose rows have those keys and values, and through training, caching, padding,
save / load and the CLI."""

import pytest
import torch
from transformers.cache_utils import Cache

import vlmpt
from promptcore import TrainConfig, Trainer, load_config, wrap
from promptcore.errors import UserError
from textpt.cache_layers import RecordingLayer
from vlmpt.cli import VLMRecipe
from vlmpt.run_config import VLMRunConfig
from vlmpt.synthetic import IMAGE, collate_examples, tiny_backbone, tiny_examples

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava")


def as64(batch: dict) -> dict:
    return {k: v.double() if k == "pixel_values" else v for k, v in batch.items()}


def recorded_key_values(backbone, rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values of the embedding rows ``rows`` ``[n, D]`` run alone at text positions 0..n-1
    (written out here: 1-D on LLaVA, the same on all three mRoPE axes on Qwen)."""
    n = rows.shape[0]
    positions = torch.arange(n).unsqueeze(0)
    if backbone.config.model_type != "llava":
        positions = positions.unsqueeze(0).expand(3, -1, -1)
    cache = Cache(layers=[RecordingLayer() for _ in range(backbone.config.get_text_config().num_hidden_layers)])
    backbone(inputs_embeds=rows.unsqueeze(0), attention_mask=torch.ones(1, n, dtype=torch.long), position_ids=positions, cache=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_prefix_holding_a_shallow_prompts_keys_and_values_gives_its_outputs(model_type):
    backbone = tiny_backbone(model_type).double()
    shallow = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=3, init_std=1.0)).double()
    deep = wrap(backbone, vlmpt.VLMPrefixConfig(num_tokens=3)).double()
    with torch.no_grad():
        kv = recorded_key_values(backbone, shallow.prompts.weight)
        deep.prompts.weight.copy_(torch.stack([t[0].transpose(0, 1).flatten(1) for pair in kv for t in pair]))
    examples = tiny_examples(backbone, 3, seed=2)
    for side in ("left", "right"):
        batch = as64(collate_examples(examples, side))
        real = batch["attention_mask"].bool()  # padding rows' outputs are unspecified
        torch.testing.assert_close(deep(**batch)[real], shallow(**batch)[real], rtol=0, atol=1e-10)
    batch = as64(collate_examples(examples, "left"))
    tokens, scores = deep.generate(4, return_scores=True, **batch)
    shallow_tokens, shallow_scores = shallow.generate(4, return_scores=True, **batch)
    assert torch.equal(tokens, shallow_tokens)
    torch.testing.assert_close(scores, shallow_scores, rtol=0, atol=1e-10)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_cached_generation_equals_the_plain_decode_and_a_padded_batch_each_example_alone(model_type):
    backbone = tiny_backbone(model_type).double()
    model = wrap(backbone, vlmpt.VLMPrefixConfig(num_tokens=2, init_std=1.0)).double()
    examples = tiny_examples(backbone, 3, seed=4)
    for side in ("left", "right"):
        batch = as64(collate_examples(examples, side))
        cached, cached_scores = model.generate(5, return_scores=True, **batch)
        plain, plain_scores = model.generate(5, use_cache=False, return_scores=True, **batch)
        assert torch.equal(cached, plain)
        torch.testing.assert_close(cached_scores, plain_scores, rtol=0, atol=1e-10)
        logits = model(**batch)
        for row, example in enumerate(examples):
            alone = as64(collate_examples([example]))
            torch.testing.assert_close(logits[row][batch["attention_mask"][row].bool()], model(**alone)[0], rtol=0, atol=1e-10)
            assert torch.equal(model.generate(5, **alone)[0], cached[row])


def test_the_prefix_changes_the_outputs_and_only_it_trains():
    backbone = tiny_backbone("qwen2_vl")
    model = wrap(backbone, vlmpt.VLMPrefixConfig(num_tokens=2, init_std=1.0))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompts.weight"]
    assert tuple(model.prompts.weight.shape) == (2 * 2, 2, 16)  # keys and values of 2 layers, 1 kv head of width 16
    one = collate_examples(tiny_examples(backbone, 1))
    frozen = backbone(**one, mm_token_type_ids=(one["input_ids"] == IMAGE).int()).logits
    assert not torch.allclose(model(**one), frozen, atol=1e-3)
    batch = collate_examples(tiny_examples(backbone, 2))
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    model.training_step(batch).backward()
    assert model.prompts.weight.grad is not None and model.prompts.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    Trainer(model, TrainConfig(max_steps=2, batch_size=2, lr=0.1, progress_bar=False, tensorboard=False), tiny_examples(backbone, 4), None, collate_examples).fit()
    assert all(torch.equal(v, weights[k]) for k, v in backbone.state_dict().items())


def test_a_trained_prefix_saves_and_loads_bitwise(tmp_path):
    cfg = load_config(VLMRunConfig, "configs/smoke/vlmpt_tiny.yaml", ["prompt.method=vlm_prefix", "data.num_samples=8", "data.eval_split=null"])
    assert isinstance(cfg.prompt, vlmpt.VLMPrefixConfig)
    recipe = VLMRecipe()
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    Trainer(model, TrainConfig(max_steps=2, batch_size=4, lr=0.3, progress_bar=False, tensorboard=False), data.train, None, data.collate_fn).fit()
    folder = model.save_prompts(tmp_path / "prefix")
    loaded = vlmpt.load_prompted(folder)
    assert isinstance(loaded, vlmpt.VLMPrefixModel)
    batch = data.collate_fn([data.train[i] for i in range(4)])
    assert torch.equal(model.eval()(**batch), loaded(**batch))
    shallow = wrap(tiny_backbone("qwen2_vl", 0, initializer_range=0.3), vlmpt.VLMPromptTuningConfig(num_tokens=4))
    with pytest.raises(UserError, match="method"):
        shallow.load_prompts(folder)  # a prefix folder is not a shallow prompt


def test_bad_prefix_config_is_refused():
    with pytest.raises(UserError, match="num_tokens: must be a positive number of prefix positions"):
        vlmpt.VLMPrefixConfig(num_tokens=0)
    with pytest.raises(UserError, match="init_std: must be positive"):
        vlmpt.VLMPrefixConfig(init_std=0)


def test_the_command_line_trains_a_prefix_and_generates_from_its_folder(tmp_path, capsys):
    from vlmpt.cli import main
    from vlmpt.synthetic import synthetic_rows

    run = tmp_path / "run"
    fast = ["--set", "train.max_steps=1", "--set", "data.num_samples=4", "--set", "data.num_eval_samples=2", "--set", "train.batch_size=2"]
    assert main(["train", "-c", "configs/smoke/vlmpt_tiny.yaml", "-o", str(run), *fast, "--set", "prompt.method=vlm_prefix"]) == 0
    capsys.readouterr()
    synthetic_rows(1)["image"][0].save(tmp_path / "red.png")
    assert main(["generate", "--prompts", str(run / "best"), str(tmp_path / "red.png"), "--question", "what colour is it ?"]) == 0
    assert capsys.readouterr().out.startswith(f"[1] {tmp_path / 'red.png'}\n    ")
