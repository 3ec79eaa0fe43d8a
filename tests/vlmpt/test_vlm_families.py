"""PaliGemma (a prefix LM: ``token_type_ids``), Idefics3 / SmolVLM (image tiles, ``pixel_attention_mask``, the
connector's pixel shuffle) and LLaVA-OneVision (anyres tiles, ``image_sizes``) on tiny random models: prompted
logits against hand-built float64 references (masks and positions written out here), cached generation against the
plain decode, padding, one training step, save / load, the three methods and the data through each model's own
processor, and the command line."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import vlmpt
from promptcore import wrap
from promptcore.errors import UnsupportedModelError, UserError
from vlmpt.data import IGNORE, VLMDataConfig, VLMEncoder
from vlmpt.synthetic import IMAGE, collate_examples, synthetic_rows, tiny_backbone, tiny_examples, tiny_processor

FAMILIES = ("paligemma", "idefics3", "llava_onevision")
N = 3


@pytest.fixture(scope="module", params=FAMILIES)
def backbone64(request):
    return tiny_backbone(request.param).double()


def as64(batch: dict) -> dict:
    return {k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in batch.items()}


def merged_embeddings(bb, example: dict, features: torch.Tensor | None = None) -> torch.Tensor:
    """``[1, L, D]``: the example's token embeddings with its image features (default: the model's) in the
    placeholder rows."""
    ids = example["input_ids"][None]
    images = {k: v.double() if v.is_floating_point() else v for k, v in example.items() if k not in ("input_ids", "token_type_ids")}
    embeds = bb.get_input_embeddings()(ids).clone()
    if features is None:
        features = torch.cat(list(bb.get_image_features(**images).pooler_output))
    embeds[0, ids[0] == IMAGE] = features.reshape(-1, embeds.shape[-1])
    return embeds


def reference_logits(
    model, example: dict, prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None, prompt: torch.Tensor | None = None, features: torch.Tensor | None = None
) -> torch.Tensor:
    """One example alone, by hand: the ``prompt`` rows (default: the model's prompt) or ``n`` prefix keys / values in
    every layer, before the merged embeddings; positions counted from 0 (Idefics3) or 1 (PaliGemma); on PaliGemma
    the prefix-LM mask written out: the prompt and every token of type 0 attend to each other, type 1 attends
    causally."""
    bb = model.backbone
    embeds = merged_embeddings(bb, example, features)
    prompt = model.prompts.weight if prompt is None else prompt
    n = prompt.shape[0] if prefix is None else prefix[0][0].shape[2]
    x = embeds if prefix is not None else torch.cat([prompt[None], embeds], dim=1)
    length = embeds.shape[1] + n  # rows and prefix positions together
    paligemma = bb.config.model_type == "paligemma"
    positions = torch.arange(length)[None] + (1 if paligemma else 0)
    positions = positions[:, length - x.shape[1] :]
    types = torch.cat([torch.zeros(n, dtype=torch.long), example.get("token_type_ids", torch.zeros(embeds.shape[1], dtype=torch.long))])
    q = torch.arange(length - x.shape[1], length)[:, None]
    k = torch.arange(length)[None]
    allowed = k <= q
    if paligemma:
        allowed |= (types[q] == 0) & (types[k] == 0)
    mask = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)[None, None]
    cache = None
    if prefix is not None:
        cache = DynamicCache()
        for i, (key, value) in enumerate(prefix):
            cache.update(key, value, i)
    language_model = bb.model.text_model if bb.config.model_type == "idefics3" else bb.model.language_model
    hidden = language_model(inputs_embeds=x, position_ids=positions, attention_mask=mask, cache=cache, use_cache=prefix is not None).last_hidden_state
    logits = bb.lm_head(hidden)[0, x.shape[1] - embeds.shape[1] :]
    cap = getattr(bb.config.get_text_config(), "final_logit_softcapping", None)  # PaliGemma 2's Gemma 2
    return logits if cap is None else torch.tanh(logits / cap) * cap


def test_prompted_logits_equal_the_hand_built_reference_in_float64(backbone64):
    model = wrap(backbone64, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0)).double()
    examples = tiny_examples(backbone64, 3)
    for side in ("left", "right"):
        batch = as64(collate_examples(examples, side))
        logits = model(**batch)
        for row, example in enumerate(examples):
            got = logits[row, batch["attention_mask"][row] == 1]
            torch.testing.assert_close(got, reference_logits(model, example), rtol=0, atol=1e-10)


def test_prefix_logits_equal_the_hand_built_reference_in_float64(backbone64):
    model = wrap(backbone64, vlmpt.VLMPrefixConfig(num_tokens=2, init_std=1.0)).double()
    examples = tiny_examples(backbone64, 2, seed=1)
    batch = as64(collate_examples(examples, "left"))
    logits = model(**batch)
    kv = model.prefix_key_values(1)
    for row, example in enumerate(examples):
        reference = reference_logits(model, example, [(k.clone(), v.clone()) for k, v in kv])
        torch.testing.assert_close(logits[row, batch["attention_mask"][row] == 1], reference, rtol=0, atol=1e-10)


def test_vpt_in_paligemmas_siglip_tower_equals_the_hand_written_forward_in_float64():
    # SigLIP has no class token: the prompts go first, fresh before every layer (deep), and are dropped after the
    # last; the language model's prompt rows sit in the bidirectional prefix.
    backbone = tiny_backbone("paligemma").double()
    model = wrap(backbone, vlmpt.VLMVisionPromptConfig(num_tokens=2, deep=True, lm_tokens=2, init_std=1.0)).double()
    vision = backbone.model.vision_tower
    examples = tiny_examples(backbone, 2, seed=3)
    batch = as64(collate_examples(examples, "left"))
    logits = model(**batch)
    for row, example in enumerate(examples):
        x = vision.embeddings(example["pixel_values"].double())
        for i, layer in enumerate(vision.encoder.layers):
            x = torch.cat([model.prompts.weight[i][None], x[:, 0 if i == 0 else 2 :]], dim=1)
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
        features = backbone.model.multi_modal_projector(vision.post_layernorm(x)[:, 2:])
        reference = reference_logits(model, example, prompt=model.lm_prompts.weight, features=features)
        torch.testing.assert_close(logits[row, batch["attention_mask"][row] == 1], reference, rtol=0, atol=1e-10)


def test_paligemma_2s_gemma_2_language_model():
    # PaliGemma 2: Gemma 2 (logit soft-capping, sliding-window layers; the window here is longer than the sequences,
    # see docs/vlm.md for transformers' own decode on longer ones).
    import transformers

    from vlmpt.synthetic import _TEXT, _VIT, VOCAB

    torch.manual_seed(0)
    config = transformers.PaliGemmaConfig(
        text_config=dict(model_type="gemma2", head_dim=16, sliding_window=64, **_TEXT),
        vision_config=dict(model_type="siglip_vision_model", projection_dim=32, **_VIT),
        image_token_index=IMAGE, projection_dim=32, hidden_size=32, vocab_size=VOCAB,
    )
    backbone = transformers.PaliGemmaForConditionalGeneration(config).eval().double()
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0)).double()
    examples = tiny_examples(backbone, 2, seed=6)
    batch = as64(collate_examples(examples, "right"))
    logits = model(**batch)
    for row, example in enumerate(examples):
        torch.testing.assert_close(logits[row, batch["attention_mask"][row] == 1], reference_logits(model, example), rtol=0, atol=1e-10)
    cached, cached_scores = model.generate(4, return_scores=True, **batch)
    plain, plain_scores = model.generate(4, use_cache=False, return_scores=True, **batch)
    assert torch.equal(cached, plain)
    torch.testing.assert_close(cached_scores, plain_scores, rtol=0, atol=1e-10)


def test_the_prefix_lm_mask_is_bidirectional_over_the_prefix_only():
    # The reference above can fail: PaliGemma run causally (no token types) gives other logits on the prefix and the
    # same on none of the suffix, and changing a suffix token changes no prefix logit.
    backbone = tiny_backbone("paligemma").double()
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0)).double()
    example = tiny_examples(backbone, 1)[0]
    batch = as64(collate_examples([example]))
    logits = model(**batch)
    causal = model(**{k: v for k, v in batch.items() if k != "token_type_ids"})
    assert (logits - causal).abs().max() > 1e-6
    changed = batch["input_ids"].clone()
    changed[0, -1] = 3 if int(changed[0, -1]) != 3 else 4
    after = model(**{**batch, "input_ids": changed})
    prefix = batch["token_type_ids"][0] == 0
    torch.testing.assert_close(after[0, prefix], logits[0, prefix], rtol=0, atol=1e-10)
    changed = batch["input_ids"].clone()
    last_prefix = int(prefix.nonzero()[-1])
    changed[0, last_prefix] = 3 if int(changed[0, last_prefix]) != 3 else 4
    assert (model(**{**batch, "input_ids": changed})[0, : last_prefix - 1] - logits[0, : last_prefix - 1]).abs().max() > 1e-6


@pytest.mark.parametrize("method", ["vlm_prompt_tuning", "vlm_prefix", "vlm_vpt"])
def test_cached_generation_equals_the_plain_decode_and_a_padded_batch_each_example_alone(backbone64, method):
    configs = {
        "vlm_prompt_tuning": vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0),
        "vlm_prefix": vlmpt.VLMPrefixConfig(num_tokens=2, init_std=1.0),
        "vlm_vpt": vlmpt.VLMVisionPromptConfig(num_tokens=2, deep=True, lm_tokens=2, init_std=1.0),
    }
    if method == "vlm_vpt" and backbone64.config.model_type == "idefics3":
        with pytest.raises(UnsupportedModelError, match="Idefics3VisionTransformer.*tiles"):
            wrap(backbone64, configs[method])
        return
    model = wrap(backbone64, configs[method]).double()
    examples = tiny_examples(backbone64, 3, seed=4)
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


@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step_updates_only_the_prompt_and_save_load_gives_identical_logits(family, tmp_path):
    backbone = tiny_backbone(family)
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    prompt_before = model.prompts.weight.detach().clone()
    batch = vlmpt.tiny_batch(backbone, 2, "right")
    model.train()
    model.training_step(batch).backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == {"prompts.weight"}
    torch.optim.SGD(list(model.prompt_parameters()), lr=0.5).step()
    assert not torch.equal(model.prompts.weight, prompt_before)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    model.eval().save_prompts(tmp_path / "p")
    other = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0, seed=1))
    assert not torch.equal(other(**batch), model(**batch))
    assert other.load_prompts(tmp_path / "p")["model_type"] == family
    assert torch.equal(other(**batch), model(**batch))


def test_paligemma_targets_are_the_suffix_tokens_only():
    backbone = tiny_backbone("paligemma")
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N))
    batch = vlmpt.tiny_batch(backbone, 2, "left")
    targets = model.targets(batch)
    suffix = (batch["token_type_ids"] == 1) & (batch["attention_mask"] == 1)
    assert torch.equal(targets != IGNORE, suffix[:, 1:])
    with pytest.raises(UserError, match="no target token"):
        model.training_step({k: v for k, v in batch.items() if k != "token_type_ids"})  # all prefix: nothing to predict
    with pytest.raises(UserError, match="token_type_ids must be 0 .prefix. or 1"):
        model(**{**batch, "token_type_ids": batch["token_type_ids"] * 2})


def test_data_through_each_processor():
    cfg = VLMDataConfig()
    table = synthetic_rows(3, 0)
    rows = [{k: table[k][i] for k in table} for i in range(3)]
    # PaliGemma: no chat template; its processor writes <image>... <bos> TEXT, the answer is the suffix
    enc = VLMEncoder(tiny_processor("paligemma"), cfg)
    assert enc.prompt_text("what colour is it ?") == "<image>what colour is it ?"
    example = enc.encode(rows[0], "row 0")
    answer = enc.answer_ids(rows[0]["answer"])
    assert example["token_type_ids"].tolist() == [0] * (len(example["input_ids"]) - len(answer)) + [1] * len(answer)
    assert example["labels"][-len(answer):].tolist() == answer and bool((example["labels"][: -len(answer)] == IGNORE).all())
    assert int((example["input_ids"] == IMAGE).sum()) == 16 and int(example["input_ids"][16]) == enc.tokenizer.bos_token_id
    batch = collate_examples([enc.encode(r, "row") for r in rows], "left", 0)
    model = wrap(tiny_backbone("paligemma"), vlmpt.VLMPromptTuningConfig(num_tokens=2))
    assert int((model.targets(batch) != IGNORE).sum()) == int((batch["labels"] != IGNORE).sum())
    # Idefics3: tiles by the image's shape (16 x 16 -> 4 tiles and the whole image, 32 x 16 -> 2 and the whole);
    # a batch pads the tile axis with all-zero tiles, which the model drops
    enc = VLMEncoder(tiny_processor("idefics3"), cfg)
    examples = [enc.encode({**rows[0], "image": synthetic_rows(1)["image"][0].resize(size)}, "row") for size in ((16, 16), (32, 16))]
    assert [e["pixel_values"].shape[1] for e in examples] == [5, 3]
    assert [int((e["input_ids"] == IMAGE).sum()) for e in examples] == [20, 12]
    batch = as64(collate_examples(examples, "left", 0))
    assert batch["pixel_values"].shape[:2] == (2, 5) and not bool(batch["pixel_attention_mask"][1, 3:].any())
    model = wrap(tiny_backbone("idefics3").double(), vlmpt.VLMPromptTuningConfig(num_tokens=2, init_std=1.0)).double()
    logits = model(**batch)
    alone = model(**as64(collate_examples(examples[1:], "left", 0)))[0]
    torch.testing.assert_close(logits[1, batch["attention_mask"][1] == 1], alone, rtol=0, atol=1e-10)
    # LLaVA-OneVision: anyres, the base image and the best grid's tiles, placeholders unpadded to the aspect ratio
    enc = VLMEncoder(tiny_processor("llava_onevision"), cfg)
    examples = [enc.encode({**rows[0], "image": synthetic_rows(1)["image"][0].resize(size)}, "row") for size in ((32, 16), (16, 16))]
    assert [e["pixel_values"].shape[1] for e in examples] == [3, 2] and examples[0]["image_sizes"].tolist() == [[16, 32]]
    batch = as64(collate_examples(examples, "left", 0))
    model = wrap(tiny_backbone("llava_onevision").double(), vlmpt.VLMPromptTuningConfig(num_tokens=2, init_std=1.0)).double()
    logits = model(**batch)
    alone = model(**as64(collate_examples(examples[1:], "left", 0)))[0]
    torch.testing.assert_close(logits[1, batch["attention_mask"][1] == 1], alone, rtol=0, atol=1e-10)


@pytest.mark.parametrize("family, task", [("paligemma", "classify"), ("idefics3", "generate"), ("llava_onevision", "generate")])
def test_the_command_line_trains_evaluates_and_answers_from_the_prompt_folder(family, task, tmp_path, capsys):
    from vlmpt.cli import main

    run = tmp_path / "run"
    fast = ["--set", "train.max_steps=1", "--set", "data.num_samples=4", "--set", "data.num_eval_samples=2", "--set", "train.batch_size=2"]
    classify = ["--set", "task.type=classify", "--set", "data.label_column=label"] if task == "classify" else []
    assert main(["train", "-c", "configs/smoke/vlmpt_tiny.yaml", "-o", str(run), *fast, *classify, "--set", f"model.name=random:{family}"]) == 0
    assert ('"accuracy"' if task == "classify" else '"exact_match"') in capsys.readouterr().out
    synthetic_rows(1)["image"][0].save(tmp_path / "red.png")
    assert main(["generate", "--prompts", str(run / "best"), str(tmp_path / "red.png"), str(tmp_path / "red.png"), "--question", "what colour is it ?"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[1] {tmp_path / 'red.png'}" and out[1].startswith("    ")
