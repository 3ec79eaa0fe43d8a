"""CLIP prompt learners on tiny random open_clip models: every method runs, only prompts train, the fast text path
equals the 77-token reference in float64, save -> load is exact, bad input gets clear errors, training learns."""

import open_clip
import pytest
import torch

import promptcore
import vpt.clip as vc
from promptcore import PromptFileError, UserError
from vpt.synthetic import SyntheticImages
from vpt.clip.tokens import get_tokenizer

NAMES = ["cat", "golden retriever", "sea lion", "tree"]


def tiny_clip(seed: int = 0, text_width: int = 64, text_layers: int = 2) -> open_clip.CLIP:
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=text_width, heads=2, layers=text_layers),
    )


def configs(names=NAMES):
    return {
        "coop": vc.CoOpConfig(class_names=names, n_ctx=4),
        "coop_csc_middle": vc.CoOpConfig(class_names=names, n_ctx=4, class_specific_context=True, class_token_position="middle"),
        "coop_front": vc.CoOpConfig(class_names=names, n_ctx=3, class_token_position="front"),
        "coop_middle": vc.CoOpConfig(class_names=names, n_ctx=5, class_token_position="middle"),
        "coop_csc_end": vc.CoOpConfig(class_names=names, n_ctx=2, class_specific_context=True),
        "coop_fixed_words": vc.CoOpConfig(class_names=names, n_ctx=2, ctx_init="a photo of a"),
        "cocoop": vc.CoCoOpConfig(class_names=names),
        "maple": vc.MaPLeConfig(class_names=names, depth=2),
        "ivlp": vc.IVLPConfig(class_names=names, depth=2, vision_n_ctx=3),
    }


IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("key", list(configs()))
def test_every_method_gives_logits_and_only_prompts_get_gradients(key):
    model = promptcore.wrap(tiny_clip(), configs()[key])
    assert isinstance(model, promptcore.PromptedModel)
    logits = model(IMAGES)
    assert logits.shape == (3, len(NAMES))
    logits.logsumexp(-1).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    prompt_names = {n for n, _ in model.named_prompt_parameters()}
    assert with_grad == prompt_names and all(n.startswith("prompts.") for n in with_grad)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert model.forward_batch({"pixel_values": IMAGES}).shape == (3, len(NAMES))
    assert model.backbone.training is False


@pytest.mark.parametrize("key", list(configs()))
def test_fast_text_path_equals_77_token_reference_in_float64(key):
    model = promptcore.wrap(tiny_clip(), configs()[key]).double()
    assert model.fast
    with torch.no_grad():  # non-trivial prompts, so the test does not pass on an initial state by accident
        for p in model.prompt_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    images = IMAGES.double()
    fast = model(images)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(model.prompt_parameters()))
    model.fast = False
    ref = model(images)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(model.prompt_parameters()))
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_coop_with_text_init_reproduces_encode_text_of_the_hand_written_prompt():
    clip = tiny_clip().double()
    model = promptcore.wrap(clip, vc.CoOpConfig(class_names=NAMES, n_ctx=4, ctx_init="a photo of a")).double()
    tok = get_tokenizer(None, 77)
    expected = clip.encode_text(tok([f"a photo of a {n}." for n in NAMES]))
    model.fast = False
    torch.testing.assert_close(model.text_features(), expected, rtol=0, atol=0)
    model.fast = True
    torch.testing.assert_close(model.text_features(), expected, rtol=0, atol=1e-12)


# Class names as the official code writes them: underscores read as spaces, the name tokenised with its period.
ODD_NAMES = ["cat", "sea_lion", "e.t."]
ODD_TEXTS = ["a photo of a cat.", "a photo of a sea lion.", "a photo of a e.t.."]


@pytest.mark.parametrize("config", [
    vc.MaPLeConfig(class_names=ODD_NAMES, n_ctx=2, depth=1, ctx_init="a photo of a"),
    vc.IVLPConfig(class_names=ODD_NAMES, n_ctx=2, depth=1, ctx_init="a photo of a"),
    vc.CoOpConfig(class_names=ODD_NAMES, n_ctx=4, ctx_init="a photo of a"),
    vc.CoOpConfig(class_names=ODD_NAMES, n_ctx=1, ctx_init="a photo of a"),
    vc.CoCoOpConfig(class_names=ODD_NAMES, n_ctx=4, ctx_init="a photo of a"),
], ids=["maple_2ctx", "ivlp_2ctx", "coop_4ctx", "coop_1ctx", "cocoop_4ctx"])
def test_at_init_the_text_is_the_official_prompt_ctx_init_then_the_class_name(config):
    """MaPLe / IVLP (MultiModalPromptLearner, VLPromptLearner) learn tokens 1..n_ctx of "a photo of a {name}." and
    keep the rest of ctx_init as words: n_ctx 2 reads [SOS][ctx1][ctx2] of a {name}. CoOp / CoCoOp (PromptLearner)
    set n_ctx to the words of ctx_init (4 for "a photo of a"). At initialisation the text features are open_clip's
    encode_text of that text, exactly on the 77-token path and to rounding on the fast one."""
    clip = tiny_clip().double()
    model = promptcore.wrap(clip, config).double()
    if isinstance(model, vc.CoCoOp):
        torch.nn.init.zeros_(model.prompts.meta_net[-1].weight)  # no image-conditioned shift: the plain context
        torch.nn.init.zeros_(model.prompts.meta_net[-1].bias)
        text = lambda: model.text_features(torch.randn(1, clip.visual.output_dim, dtype=torch.float64))[0]  # noqa: E731
    else:
        text = model.text_features
    expected = clip.encode_text(get_tokenizer(None, 77)(ODD_TEXTS))
    model.fast = False
    torch.testing.assert_close(text(), expected, rtol=0, atol=0)
    model.fast = True
    torch.testing.assert_close(text(), expected, rtol=0, atol=1e-12)


def official_image_features(clip, images, first, deep):
    """The official MaPLe / IVLP image tower (VisionTransformer_MaPLe.forward and the blocks' prompt replacement),
    written out: the first prompts are appended after the positional embedding, before ln_pre; each deeper
    layer's prompts replace the last tokens before the block; the class token is pooled."""
    v = clip.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(len(x), 1, -1), x], 1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, first.expand(len(x), -1, -1)], 1))
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, : -len(first)], deep[i - 1].expand(len(x), -1, -1)], 1)
        x = block(x)
    return v.ln_post(x[:, 0]) @ v.proj


@pytest.mark.parametrize("method", ["maple", "ivlp"])
def test_image_prompts_follow_the_official_tower(method):
    clip = tiny_clip().double()
    config = {"maple": vc.MaPLeConfig, "ivlp": vc.IVLPConfig}[method](class_names=NAMES, depth=2)
    model = promptcore.wrap(clip, config).double()
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(torch.randn_like(p))
    prompts = model.vision_prompts()
    images = IMAGES.double()
    expected = official_image_features(clip, images, prompts[0], prompts[1:])
    torch.testing.assert_close(model.vision_tower.encode(images, prompts), expected, rtol=0, atol=1e-12)


def test_maple_deep_projections_start_as_copies_of_one_linear():
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=3, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=3),
    )
    model = promptcore.wrap(clip, vc.MaPLeConfig(class_names=NAMES, depth=3))
    first, *deep = model.prompts.proj
    assert all(torch.equal(d.weight, deep[0].weight) and torch.equal(d.bias, deep[0].bias) for d in deep)
    assert not torch.equal(first.weight, deep[0].weight)
    assert deep[0].weight.data_ptr() != deep[1].weight.data_ptr()  # copies, trained separately


def test_fixed_words_of_ctx_init_need_the_class_name_at_the_end():
    with pytest.raises(ValueError, match=r"ctx_init: its words past the first 2 tokens stay fixed.*class_token_position: end"):
        promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=NAMES, n_ctx=2, ctx_init="a photo of a", class_token_position="front"))


def test_class_names_equal_once_underscores_read_as_spaces_are_refused():
    with pytest.raises(ValueError, match=r"class_names: \['sea_lion', 'sea lion'\] give the same prompt text"):
        vc.CoOpConfig(class_names=["sea_lion", "sea lion"])


def test_class_names_the_tokenizer_cannot_tell_apart_are_refused():
    # CLIP's tokenizer lowercases: both names give one prompt, so the two classes would tie.
    with pytest.raises(UserError, match=r"class_names: 'Cat' and 'cat' are the same tokens \[\d+\] for the CLIP tokenizer"):
        promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=["Cat", "cat", "dog"], n_ctx=2))
    with pytest.raises(UserError, match=r"class_names: 'Cat' and 'cat' are the same tokens"):
        vc.zeroshot_weights(tiny_clip(), get_tokenizer(None, 77), ["Cat", "cat", "dog"], ["a photo of a {}."])


def test_zero_shot_matches_manual_clip_and_averages_templates():
    clip = tiny_clip()
    tok = get_tokenizer(None, 77)
    templates = ["a photo of a {}.", "a drawing of a {}."]
    weights = vc.zeroshot_weights(clip, tok, NAMES, templates)
    per = [clip.encode_text(tok([t.format(n) for n in NAMES]), normalize=True) for t in templates]
    torch.testing.assert_close(weights, torch.nn.functional.normalize(per[0] + per[1], dim=-1))
    model = promptcore.wrap(clip, vc.ZeroShotCLIPConfig(class_names=NAMES, templates=templates))
    image = clip.encode_image(IMAGES, normalize=True)
    torch.testing.assert_close(model(IMAGES), clip.logit_scale.exp() * image @ weights.T)
    assert list(model.prompt_parameters()) == []


# ----- template sets ----------------------------------------------------------------------------------------------
def test_template_sets_resolve_and_unknown_names_are_named():
    from vpt.clip.templates import templates_of

    assert templates_of("coop:oxford_pets") == ["a photo of a {}, a type of pet."]
    assert templates_of("coop:dtd") == ["{} texture."] and templates_of("kgcoop:dtd") == ["a photo of a {}, a type of texture."]
    imagenet80 = templates_of("clip:imagenet80")
    assert len(imagenet80) == 80 and imagenet80[0] == "a bad photo of a {}."
    assert templates_of("promptsrc:imagenet60") == imagenet80[:60] and "a photo of a {}." in imagenet80[:60]
    assert set(templates_of("clip:imagenet_select")) <= set(imagenet80)
    assert templates_of(["a {}."]) == ["a {}."]
    with pytest.raises(ValueError, match=r"templates: unknown template set 'coop:oxford_pet'. Did you mean 'coop:oxford_pets'"):
        vc.ZeroShotCLIPConfig(templates="coop:oxford_pet")


def test_zero_shot_with_a_named_set_writes_underscores_as_spaces():
    clip = tiny_clip()
    tok = get_tokenizer(None, 77)
    model = promptcore.wrap(clip, vc.ZeroShotCLIPConfig(class_names=["apple_pie", "baby_back_ribs"], templates="coop:food101"))
    expected = clip.encode_text(tok(["a photo of apple pie, a type of food.", "a photo of baby back ribs, a type of food."]), normalize=True)
    torch.testing.assert_close(model.weights, expected)
    assert model.prompt_config()["templates"] == ["a photo of {}, a type of food."]


def test_cocoop_batched_equals_one_image_at_a_time():
    model = promptcore.wrap(tiny_clip(), vc.CoCoOpConfig(class_names=NAMES)).double()
    images = IMAGES.double()
    batched = model(images)
    single = torch.cat([model(images[i : i + 1]) for i in range(len(images))])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-10)
    model.config.image_chunk = 2
    torch.testing.assert_close(model(images), batched, rtol=0, atol=1e-12)


@pytest.mark.parametrize("key", ["coop", "coop_csc_middle", "cocoop", "maple", "ivlp"])
def test_save_then_load_gives_identical_logits(tmp_path, key):
    trained = promptcore.wrap(tiny_clip(), configs()[key])
    with torch.no_grad():
        for p in trained.prompt_parameters():
            p.add_(torch.randn_like(p))
    trained.eval()
    trained.save_prompts(tmp_path / "p")
    fresh = promptcore.wrap(tiny_clip(), configs()[key]).eval()
    assert not torch.equal(fresh(IMAGES), trained(IMAGES))
    meta = fresh.load_prompts(tmp_path / "p")
    assert meta["method"] == trained.method and meta["class_names"] == NAMES
    torch.testing.assert_close(fresh(IMAGES), trained(IMAGES), rtol=0, atol=0)


def test_base_to_new_moves_a_unified_context_to_other_classes():
    model = promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=NAMES[:2], n_ctx=4))
    model.set_class_names(["boat", "plane", "horse"])
    assert model(IMAGES).shape == (3, 3)
    csc = promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=NAMES[:2], class_specific_context=True))
    with pytest.raises(ValueError, match="class-specific context.*cannot move"):
        csc.set_class_names(["boat", "plane"])


# ----- bad input ----------------------------------------------------------------------------------------------
def test_a_class_name_longer_than_the_context_is_named():
    long = "very " * 80 + "long dog"
    with pytest.raises(ValueError, match=r"class 'very very.*tokenizes beyond the text context length"):
        promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=["cat", long]))


def test_context_plus_class_name_over_77_tokens_is_named():
    name = "word " * 60 + "end"
    with pytest.raises(ValueError, match=r"class 'word word.*needs 80 tokens.*61 for the name, 16 context.*context length 77"):
        promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=["cat", name], n_ctx=16))


def test_duplicate_and_missing_class_names_are_rejected():
    with pytest.raises(ValueError, match=r"class_names: duplicate class names \['cat'\]"):
        vc.CoOpConfig(class_names=["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="class_names: the text prompts need the class names"):
        promptcore.wrap(tiny_clip(), vc.CoOpConfig())


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="n_ctx: must be a positive integer, found 0"):
        vc.CoOpConfig(n_ctx=0)
    with pytest.raises(ValueError, match="depth: 9 is more than the text tower's 2 layers"):
        promptcore.wrap(tiny_clip(), vc.MaPLeConfig(class_names=NAMES, depth=9))
    with pytest.raises(ValueError, match=r"ctx_init: 'a photo' is 2 tokens but n_ctx is 4"):
        promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=NAMES, n_ctx=4, ctx_init="a photo"))
    with pytest.raises(ValueError, match=r"templates: \['a photo'\] have no '\{\}'"):
        vc.ZeroShotCLIPConfig(templates=["a photo"])


def test_a_prompt_file_for_another_text_tower_is_rejected(tmp_path):
    small = promptcore.wrap(tiny_clip(text_width=32), vc.CoOpConfig(class_names=NAMES, n_ctx=4))
    small.save_prompts(tmp_path / "p")
    big = promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=NAMES, n_ctx=4))
    with pytest.raises(PromptFileError, match="prompt dim 32 does not match backbone width 64"):
        big.load_prompts(tmp_path / "p")
    deep = promptcore.wrap(tiny_clip(), vc.MaPLeConfig(class_names=NAMES, depth=2))
    deep.save_prompts(tmp_path / "m")
    shallow = promptcore.wrap(tiny_clip(), vc.MaPLeConfig(class_names=NAMES, depth=1))
    with pytest.raises(PromptFileError, match="prompt depth 2 does not match"):
        shallow.load_prompts(tmp_path / "m")


def test_deep_vision_prompts_need_a_vit_image_tower():
    torch.manual_seed(0)
    resnet_clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=[1, 1, 1, 1], width=8, head_width=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    )
    with pytest.raises(ValueError, match="ModifiedResNet.*need an open_clip VisionTransformer.*use CoOp or CoCoOp"):
        promptcore.wrap(resnet_clip, vc.MaPLeConfig(class_names=NAMES, depth=1))
    assert promptcore.wrap(resnet_clip, vc.CoOpConfig(class_names=NAMES, n_ctx=2))(IMAGES).shape == (3, 4)


def test_fast_path_is_refused_where_it_does_not_apply():
    torch.manual_seed(0)
    bidirectional = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=1, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1, no_causal_mask=True),
    )
    with pytest.raises(ValueError, match="text_path: 'fast' does not apply.*no causal mask"):
        promptcore.wrap(bidirectional, vc.CoOpConfig(class_names=NAMES, text_path="fast"))
    auto = promptcore.wrap(bidirectional, vc.CoOpConfig(class_names=NAMES, n_ctx=2))
    assert auto.fast is False and auto(IMAGES).shape == (3, 4)


# ----- learning -----------------------------------------------------------------------------------------------
def test_coop_learns_the_synthetic_classes():
    from promptcore.train_config import TrainConfig
    from promptcore.trainer import Trainer

    # A random text tower gives the context little to work with; this seeded set-up (16 context tokens, 40 steps)
    # goes from chance (0.25) to about 0.6.
    train = SyntheticImages(256, 4, 32, noise=0.25, seed=0)
    test = SyntheticImages(128, 4, 32, noise=0.25, seed=0, split="test")
    model = promptcore.wrap(tiny_clip(), vc.CoOpConfig(class_names=NAMES, n_ctx=16))
    cfg = TrainConfig(epochs=10, max_steps=40, batch_size=32, lr=0.01, tensorboard=False, progress_bar=False, eval_every_epochs=0)
    trainer = Trainer(model, cfg, train, None, collate_fn=torch.utils.data.default_collate)
    before = trainer.evaluate(test)["accuracy"]
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer.fit()
    accuracy = trainer.evaluate(test)["accuracy"]
    assert accuracy >= 0.45 and accuracy > before + 0.15, f"CoOp went from {before:.3f} to {accuracy:.3f} on 4 classes (chance 0.25)"
    assert all(torch.equal(backbone_before[k], v) for k, v in model.backbone.state_dict().items())
