"""``vlm_vpt``: VPT-shallow / VPT-deep in LLaVA's CLIP vision tower and in Qwen2-VL's / Qwen2.5-VL's packed towers
(optionally with prompt rows in the language model), checked in float64 against a hand-written forward, and through
padding, caching, training, save / load and the CLI."""

import pytest
import torch

import vlmpt
from promptcore import TrainConfig, Trainer, load_config, wrap
from promptcore.errors import UnsupportedModelError, UserError
from vlmpt.cli import VLMRecipe
from vlmpt.run_config import VLMRunConfig
from vlmpt.synthetic import IMAGE, collate_examples, synthetic_rows, tiny_backbone, tiny_examples

QWEN_TOWER = {"initializer_range": 0.3}
"""The tiny Qwen towers' init: vision prompts then move the image features clearly (at 0.02 hardly at all)."""


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


def qwen_features(tower, example: dict, prompts: torch.Tensor) -> torch.Tensor:
    """One image alone, by hand, through a Qwen2-VL / Qwen2.5-VL tower: its patches in the processor's order (2 x 2
    merge blocks), their 2-D rotary embedding from positions written out here; before block i < len(prompts) the
    prompt rows are ``prompts[i]``; each block run from its parts, the attention once per segment (the image, or on
    Qwen2.5-VL's windowed blocks each window of 2 x 2 merged patches, found here from the patch positions) with the
    prompt rows first, unrotated, and the prompt rows' attention output the mean over the segments; the merger on
    the patches alone."""
    t, h, w = example["image_grid_thw"][0].tolist()
    m, cfg = tower.spatial_merge_size, tower.config
    x = tower.patch_embed(example["pixel_values"].double())
    grid = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = (a.reshape(h // m, m, w // m, m).transpose(1, 2).flatten() for a in grid)
    cos, sin = tower.rotary_pos_emb(x, torch.stack([rows, cols], -1))
    windowed = getattr(cfg, "fullatt_block_indexes", None)
    segments = {"full": [torch.arange(h * w)]}
    if windowed is not None:
        side = cfg.window_size // m // cfg.patch_size  # a window's side in merged patches
        window = (rows // m // side) * w + cols // m // side
        segments["window"] = [(window == k).nonzero()[:, 0] for k in window.unique()]
    n, p = prompts.shape[1], prompts[0]
    for i, block in enumerate(tower.blocks):
        p = prompts[i] if i < len(prompts) else p  # later blocks run the prompt rows the previous block gave
        parts = segments["full" if windowed is None or i in windowed else "window"]
        hp, hx = block.norm1(p), block.norm1(x)
        ax, ap = torch.zeros_like(x), []
        for s in parts:
            rope = (torch.cat([cos.new_ones(n, cos.shape[1]), cos[s]]), torch.cat([sin.new_zeros(n, sin.shape[1]), sin[s]]))
            out = block.attn(torch.cat([hp, hx[s]]), cu_seqlens=torch.tensor([0, n + len(s)], dtype=torch.int32), position_embeddings=rope)
            ap.append(out[:n])
            ax[s] = out[n:]
        p, x = p + torch.stack(ap).mean(0), x + ax
        p, x = p + block.mlp(block.norm2(p)), x + block.mlp(block.norm2(x))
    return tower.merger(x)


def qwen_logits(backbone, example: dict, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """One example alone, by hand: ``rows`` ``[m, D]`` before its token embeddings with ``features`` in the image
    placeholder rows; mRoPE positions from the model's own ``get_rope_index`` with the rows as text tokens."""
    ids = example["input_ids"][None]
    embeds = backbone.get_input_embeddings()(ids).clone()
    embeds[0, ids[0] == IMAGE] = features
    m = rows.shape[0]
    full = torch.cat([torch.full((1, m), 7), ids], dim=1)
    positions, _ = backbone.model.get_rope_index(full, mm_token_type_ids=(full == IMAGE).int(), image_grid_thw=example["image_grid_thw"])
    hidden = backbone.model.language_model(inputs_embeds=torch.cat([rows[None], embeds], dim=1), position_ids=positions).last_hidden_state
    return backbone.lm_head(hidden)[0, m:]


def frozen_logits(backbone, batch: dict) -> torch.Tensor:
    """The backbone's own logits of a batch (Qwen's forward wants the processor's ``mm_token_type_ids``)."""
    types = {"mm_token_type_ids": (batch["input_ids"] == IMAGE).int()} if "image_grid_thw" in batch else {}
    return backbone(**batch, **types).logits


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


@pytest.mark.parametrize("model_type, deep, lm_tokens", [("qwen2_vl", False, 2), ("qwen2_vl", True, 0), ("qwen2_5_vl", False, 0), ("qwen2_5_vl", True, 2)])
def test_qwen_prompted_logits_equal_the_hand_built_reference_in_float64(model_type, deep, lm_tokens):
    backbone = tiny_backbone(model_type, vision_config=QWEN_TOWER).double()
    model = wrap(backbone, vlmpt.VLMVisionPromptConfig(num_tokens=3, deep=deep, lm_tokens=lm_tokens, init_std=1.0)).double()
    tower = backbone.model.visual
    examples = tiny_examples(backbone, 3, seed=5)  # images of 4 x 4 and 4 x 8 patches: one and two windows on Qwen2.5-VL
    prompts = model.prompts.weight if deep else model.prompts.weight[None]
    rows = model.lm_prompts.weight if lm_tokens else torch.zeros(0, 32, dtype=torch.float64)
    features = [qwen_features(tower, e, prompts) for e in examples]
    for e, f in zip(examples, features):  # the prompts move the features: a misplaced prompt shows
        plain = qwen_features(tower, e, torch.zeros_like(prompts))
        assert (f - plain).abs().max() > 0.1
    for side in ("left", "right"):
        batch = as64(collate_examples(examples, side))  # every image of the batch packed in one tower sequence
        logits = model(**batch)
        for row, (example, f) in enumerate(zip(examples, features)):
            got = logits[row, batch["attention_mask"][row] == 1]
            torch.testing.assert_close(got, qwen_logits(backbone, example, f, rows), rtol=0, atol=1e-10)
            torch.testing.assert_close(got, model(**as64(collate_examples([example])))[0], rtol=0, atol=1e-10)
    cached, scores = model.generate(4, return_scores=True, **batch)
    plain, plain_scores = model.generate(4, use_cache=False, return_scores=True, **batch)
    assert torch.equal(cached, plain)
    torch.testing.assert_close(scores, plain_scores, rtol=0, atol=1e-10)
    with model.prompted_backbone():  # what the tower returns has no prompt rows
        out = tower(batch["pixel_values"], grid_thw=batch["image_grid_thw"], output_hidden_states=True)
    assert {h.shape[0] for h in (out.last_hidden_state, *out.hidden_states)} == {int(batch["image_grid_thw"].prod(-1).sum())}


@pytest.mark.parametrize("model_type", ["llava", "qwen2_5_vl"])
def test_only_the_prompts_train_and_the_backbone_alone_stays_the_frozen_model(model_type):
    backbone = tiny_backbone(model_type, vision_config=QWEN_TOWER if model_type != "llava" else None)
    batch = collate_examples(tiny_examples(backbone, 2))
    frozen = frozen_logits(backbone, batch)
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = wrap(backbone, vlmpt.VLMVisionPromptConfig(num_tokens=2, deep=True, lm_tokens=1, init_std=1.0))
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == ["lm_prompts.weight", "prompts.weight"]
    assert tuple(model.prompts.weight.shape) == (2, 2, 32)  # 2 tower layers, 2 tokens, the tower's width
    model.training_step(batch).backward()
    assert model.prompts.weight.grad.abs().sum() > 0 and model.lm_prompts.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    Trainer(model, TrainConfig(max_steps=2, batch_size=2, lr=0.1, progress_bar=False, tensorboard=False), tiny_examples(backbone, 4), None, collate_examples).fit()
    assert all(torch.equal(v, weights[k]) for k, v in backbone.state_dict().items())
    assert torch.equal(frozen_logits(backbone, batch), frozen)  # no hook is left on the tower
    assert not torch.allclose(model(**batch), frozen, atol=1e-3)


@pytest.mark.parametrize("name", ["random:llava", "random:qwen2_5_vl"])
def test_a_trained_vision_prompt_saves_and_loads_bitwise(tmp_path, name):
    cfg = load_config(VLMRunConfig, "configs/smoke/vlmpt_tiny.yaml", [
        f"model.name={name}", "prompt.method=vlm_vpt", "prompt.deep=true", "prompt.lm_tokens=2", "data.num_samples=8", "data.eval_split=null",
    ])
    recipe = VLMRecipe()
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    Trainer(model, TrainConfig(max_steps=2, batch_size=4, lr=0.3, progress_bar=False, tensorboard=False), data.train, None, data.collate_fn).fit()
    loaded = vlmpt.load_prompted(model.save_prompts(tmp_path / "vpt"))
    assert isinstance(loaded, vlmpt.VLMVisionPromptModel) and loaded.config.deep
    batch = data.collate_fn([data.train[i] for i in range(4)])
    assert torch.equal(model.eval()(**batch), loaded(**batch))


def test_towers_that_are_neither_vits_nor_packed_and_bad_configs_are_refused():
    with pytest.raises(UnsupportedModelError, match=r"the vision tower of Idefics3ForConditionalGeneration .* is not a ViT that VPT prompts can extend .*tiles.*packed towers of Qwen2-VL"):
        wrap(tiny_backbone("idefics3"), vlmpt.VLMVisionPromptConfig())
    with pytest.raises(UserError, match="num_tokens: must be a positive number of vision prompt tokens"):
        vlmpt.VLMVisionPromptConfig(num_tokens=0)
    with pytest.raises(UserError, match=r"lm_tokens: must be a number of language-model prompt rows \(0: none\)"):
        vlmpt.VLMVisionPromptConfig(lm_tokens=-1)


def test_the_command_line_trains_evaluates_and_generates_with_vision_prompts(tmp_path, capsys):
    from vlmpt.cli import main

    smoke = "configs/smoke/vlmpt_tiny.yaml"
    fast = ["--set", "train.max_steps=1", "--set", "data.num_samples=4", "--set", "data.num_eval_samples=2", "--set", "train.batch_size=2"]
    vpt = ["--set", "prompt.method=vlm_vpt", "--set", "prompt.deep=true"]
    assert main(["train", "-c", smoke, "-o", str(tmp_path / "run"), *fast, *vpt, "--set", "model.name=random:llava"]) == 0
    capsys.readouterr()
    recorded = vlmpt.load_prompted(tmp_path / "run" / "best")
    assert isinstance(recorded, vlmpt.VLMVisionPromptModel) and recorded.config.deep
    qwen = tmp_path / "qwen"  # the smoke config's Qwen2-VL
    assert main(["train", "-c", smoke, "-o", str(qwen), *fast, *vpt]) == 0
    assert main(["eval", "-c", smoke, "--prompts", str(qwen / "best"), *fast, *vpt]) == 0
    image = tmp_path / "red.png"
    synthetic_rows(1)["image"][0].save(image)
    capsys.readouterr()
    assert main(["generate", "--prompts", str(qwen / "best"), str(image), "--question", "what colour is it ?"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[1] {image}" and out[1].startswith("    ")
    assert isinstance(vlmpt.load_prompted(qwen / "best").tower, vlmpt.vision_prompts.PackedTower)
    assert main(["train", "-c", smoke, "-o", str(tmp_path / "idefics3"), *fast, *vpt, "--set", "model.name=random:idefics3"]) == 2
    assert "is not a ViT that VPT prompts can extend" in capsys.readouterr().err
