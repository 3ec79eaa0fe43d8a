"""vlm_prompt_tuning on tiny random LLaVA, Qwen2-VL and Qwen2.5-VL models: placement and positions against a
hand-built float64 reference, the loss, cached generation against the plain decode, padding, prompt files."""

from __future__ import annotations

import pytest
import torch

import vlmpt
from promptcore import PromptFileError, wrap
from promptcore.errors import UnsupportedModelError, UserError
from vlmpt.model import IGNORE, Packed
from vlmpt.synthetic import IMAGE, collate_examples, tiny_backbone, tiny_examples

FAMILIES = ["llava", "qwen2_vl", "qwen2_5_vl"]
N = 3


@pytest.fixture(scope="module", params=FAMILIES)
def backbone64(request):
    return tiny_backbone(request.param).double()


def prompted(backbone, seed=0, num_tokens=N):
    # A prompt of unit scale moves the tiny model's logits clearly: a misplaced or mispositioned prompt shows.
    return wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=num_tokens, init_std=1.0, seed=seed)).double()


def as64(batch):
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


def reference_logits(model, example):
    """One example alone, by hand: [prompt, token embeddings with the image features in the placeholder rows],
    positions from the model's own position code over the sequence with the prompt as text tokens."""
    bb = model.backbone
    ids = example["input_ids"][None]
    images = {k: v.double() if v.is_floating_point() else v for k, v in example.items() if k != "input_ids"}
    embeds = bb.get_input_embeddings()(ids).clone()
    features = torch.cat(list(bb.get_image_features(**images).pooler_output))
    embeds[0, ids[0] == IMAGE] = features
    x = torch.cat([model.prompts.weight[None], embeds], dim=1)
    full = torch.cat([torch.full((1, N), 7), ids], dim=1)
    if bb.config.model_type == "llava":
        positions = torch.arange(full.shape[1])[None]
    else:
        positions, _ = bb.model.get_rope_index(full, mm_token_type_ids=(full == IMAGE).int(), image_grid_thw=example["image_grid_thw"])
    hidden = bb.model.language_model(inputs_embeds=x, position_ids=positions).last_hidden_state
    return bb.lm_head(hidden)[0, N:]


@pytest.mark.parametrize("side", ["left", "right"])
def test_prompted_logits_equal_the_hand_built_reference_in_float64(backbone64, side):
    model = prompted(backbone64)
    examples = tiny_examples(backbone64, 3)
    batch = as64(collate_examples(examples, side))
    logits = model(**batch)
    for row, example in enumerate(examples):
        got = logits[row, batch["attention_mask"][row] == 1]
        torch.testing.assert_close(got, reference_logits(model, example), rtol=0, atol=1e-10)


def test_zero_prompt_length_is_refused():
    with pytest.raises(UserError, match="num_tokens: must be a positive"):
        vlmpt.VLMPromptTuningConfig(num_tokens=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step_updates_only_the_prompt(family):
    backbone = tiny_backbone(family)
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    prompt_before = model.prompts.weight.detach().clone()
    optimizer = torch.optim.SGD(list(model.prompt_parameters()), lr=0.5)
    model.train()
    loss = model.training_step(vlmpt.tiny_batch(backbone, 2, "right"))
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"prompts.weight"}
    optimizer.step()
    assert not torch.equal(model.prompts.weight, prompt_before)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    assert model.count_parameters()[0] == N * 32


def test_targets_mask_padding_image_rows_instruction_and_the_token_after_padding():
    backbone = tiny_backbone("qwen2_vl")
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N))
    batch = vlmpt.tiny_batch(backbone, 2, "left")
    labels = batch["input_ids"].clone()
    instruction = 2
    first = batch["attention_mask"].argmax(1)
    for row in range(2):
        labels[row, first[row] : first[row] + instruction] = IGNORE
    targets = model.targets({**batch, "labels": labels})
    ids, mask = batch["input_ids"][:, 1:], batch["attention_mask"]
    for row in range(2):
        for j in range(ids.shape[1]):  # target j is the label of input token j + 1
            token = j + 1
            expected = bool(mask[row, token]) and bool(mask[row, token - 1]) and ids[row, j] != IMAGE
            expected = expected and token >= first[row] + instruction
            assert (targets[row, j] != IGNORE) == expected, (row, j)
            if expected:
                assert targets[row, j] == ids[row, j]
    with pytest.raises(UserError, match="no target token"):
        model.training_step({**batch, "labels": torch.full_like(labels, IGNORE)})


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_generate_equals_the_uncached_step_by_step_decode(backbone64, side):
    model = prompted(backbone64)
    batch = as64(vlmpt.tiny_batch(backbone64, 2, side))
    tokens, scores = model.generate(max_new_tokens=6, return_scores=True, **batch)
    plain_tokens, plain_scores = model.generate(max_new_tokens=6, use_cache=False, return_scores=True, **batch)
    assert torch.equal(tokens, plain_tokens)
    torch.testing.assert_close(scores, plain_scores, rtol=0, atol=1e-10)


def test_decode_positions_without_the_prefill_offset_would_be_caught(backbone64, monkeypatch):
    # The comparison above can fail: decode steps one position off change the scores far beyond its tolerance.
    model = prompted(backbone64)
    batch = as64(vlmpt.tiny_batch(backbone64, 2, "left"))
    _, plain = model.generate(max_new_tokens=3, use_cache=False, return_scores=True, **batch)
    shifted = Packed.next_positions
    monkeypatch.setattr(Packed, "next_positions", lambda self, family: shifted(self, family) + 1)
    _, wrong = model.generate(max_new_tokens=3, return_scores=True, **batch)
    assert (wrong - plain).abs().max() > 1e-6


def test_a_padded_batch_generates_what_each_example_generates_alone(backbone64):
    model = prompted(backbone64)
    examples = tiny_examples(backbone64, 3, seed=1)
    tokens, scores = model.generate(max_new_tokens=5, return_scores=True, **as64(collate_examples(examples, "left")))
    for row, example in enumerate(examples):
        alone, alone_scores = model.generate(max_new_tokens=5, return_scores=True, **as64(collate_examples([example])))
        assert torch.equal(tokens[row], alone[0])
        torch.testing.assert_close(scores[row], alone_scores[0], rtol=0, atol=1e-10)


def test_eos_ends_rows_and_generation():
    backbone = tiny_backbone("llava")
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0))
    batch = vlmpt.tiny_batch(backbone, 2)
    free = model.generate(max_new_tokens=4, **batch)
    eos = int(free[0, 1])
    tokens = model.generate(max_new_tokens=4, eos_token_id=eos, **batch)
    first_eos = [int((row == eos).nonzero()[0]) if (row == eos).any() else None for row in free]
    for row, stop in enumerate(first_eos):
        if stop is not None:
            assert torch.equal(tokens[row, : stop + 1], free[row, : stop + 1]) and bool((tokens[row, stop:] == eos).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_give_identical_logits_and_foreign_prompts_are_refused(family, tmp_path):
    backbone = tiny_backbone(family)
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0, seed=0))
    batch = vlmpt.tiny_batch(backbone, 2)
    model.save_prompts(tmp_path / "p")
    other = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0, seed=1))
    assert not torch.equal(other(**batch), model(**batch))
    meta = other.load_prompts(tmp_path / "p")
    assert meta["method"] == "vlm_prompt_tuning" and meta["model_type"] == family
    assert torch.equal(other(**batch), model(**batch))
    longer = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N + 1))
    with pytest.raises(PromptFileError, match="prompt length 3 does not match"):
        longer.load_prompts(tmp_path / "p")


def test_unsupported_models_and_batch_keys_are_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM .* is not a supported vision-language model"):
        wrap(text_only, vlmpt.VLMPromptTuningConfig())
    backbone = tiny_backbone("qwen2_vl")
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N))
    batch = vlmpt.tiny_batch(backbone, 2)
    with pytest.raises(UserError, match=r"batch keys \['pixel_values_videos'\] are not taken"):
        model(**batch, pixel_values_videos=torch.zeros(1))
    with pytest.raises(UserError, match="no real token"):
        model(**{**batch, "attention_mask": torch.zeros_like(batch["attention_mask"])})


def test_a_prompt_row_equal_to_the_image_placeholder_embedding_is_refused():
    backbone = tiny_backbone("llava")
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N))
    with torch.no_grad():
        model.prompts.weight[1] = backbone.get_input_embeddings().weight[IMAGE]
    with pytest.raises(UserError, match="equals the image placeholder"):
        model(**vlmpt.tiny_batch(backbone, 1))



def test_promptcore_trainer_trains_the_prompt_and_reports_token_metrics():
    from promptcore import TrainConfig, Trainer

    backbone = tiny_backbone("qwen2_vl")
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    prompt_before = model.prompts.weight.detach().clone()
    examples = tiny_examples(backbone, 8)
    config = TrainConfig(epochs=1, max_steps=2, batch_size=4, lr=0.05, progress_bar=False, tensorboard=False, metric="loss", metric_mode="min")
    result = Trainer(model, config, examples, examples, collate_examples).fit()
    assert set(result["eval"]) == {"loss", "token_accuracy", "count"} and result["eval"]["count"] > 0
    assert not torch.equal(model.prompts.weight, prompt_before)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())


def test_the_processors_mm_token_type_ids_are_accepted_and_recomputed():
    backbone = tiny_backbone("qwen2_vl")
    model = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=N))
    batch = vlmpt.tiny_batch(backbone, 2)
    stale = torch.zeros_like(batch["input_ids"])  # whatever the processor said: the prompt moves the image rows
    assert torch.equal(model(**batch, mm_token_type_ids=stale), model(**batch))


def tiny_qwen2_vl_processor():
    """A real Qwen2VLProcessor over a word-level tokenizer of the tiny model's vocabulary (built offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    special = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    words = ["<pad>", "<s>", "</s>", *[f"w{i}" for i in range(3, IMAGE)], *special]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w3"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", additional_special_tokens=special, padding_side="left"
    )
    sizes = dict(patch_size=4, temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessor(min_pixels=16 * 16, max_pixels=32 * 32, **sizes)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(**sizes))


def test_a_qwen2_vl_processor_batch_of_two_image_sizes_runs_as_it_comes():
    from PIL import Image

    processor = tiny_qwen2_vl_processor()
    images = [Image.new("RGB", (16, 16), "white"), Image.new("RGB", (32, 16), "red")]
    texts = ["w5 w6 <|vision_start|> <|image_pad|> <|vision_end|> w7", "w8 <|vision_start|> <|image_pad|> <|vision_end|> w9 w10 w11"]
    batch = dict(processor(images=images, text=texts, return_tensors="pt", padding=True))
    assert {"mm_token_type_ids", "image_grid_thw"} <= set(batch) and (batch["input_ids"] == IMAGE).sum(1).tolist() == [4, 8]
    model = wrap(tiny_backbone("qwen2_vl").double(), vlmpt.VLMPromptTuningConfig(num_tokens=N)).double()
    batch = as64(batch)
    # This prompt makes the tiny model's second choice the image placeholder token; generate never writes it.
    tokens, scores = model.generate(max_new_tokens=4, return_scores=True, **batch)
    assert int(scores[1, 1].argmax()) == IMAGE and not bool((tokens == IMAGE).any())
    plain_tokens, plain_scores = model.generate(max_new_tokens=4, use_cache=False, return_scores=True, **batch)
    assert torch.equal(tokens, plain_tokens)
    torch.testing.assert_close(scores, plain_scores, rtol=0, atol=1e-10)
