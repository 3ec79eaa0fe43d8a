"""KgCoOp and PromptSRC: the losses are the official ones, computed by hand here from the model's parts; the frozen
CLIP features they pull towards; PromptSRC's Gaussian prompt aggregation over epochs."""

import os
import signal

import pytest
import torch
import torch.nn.functional as F

import promptcore
import vpt.clip as vc
from vpt.clip.tokens import get_tokenizer

from test_clip_methods import IMAGES, NAMES, tiny_clip

LABELS = torch.tensor([0, 3, 1])


def perturbed(model):
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


# ----- KgCoOp -------------------------------------------------------------------------------------------------------
def test_kgcoop_hand_crafted_features_are_the_frozen_clip_text_of_the_templates():
    clip = tiny_clip().double()
    model = promptcore.wrap(clip, vc.KgCoOpConfig(class_names=["sea_lion", "cat"], templates="kgcoop:dtd")).double()
    tok = get_tokenizer(None, 77)
    expected = clip.encode_text(tok(["a photo of a sea lion, a type of texture.", "a photo of a cat, a type of texture."]), normalize=True)
    torch.testing.assert_close(model.zeroshot_text_features(), expected)


def test_kgcoop_loss_is_cross_entropy_plus_weight_times_one_minus_mean_cosine():
    model = perturbed(promptcore.wrap(tiny_clip(), vc.KgCoOpConfig(class_names=NAMES, weight=8.0)).double())
    batch = {"pixel_values": IMAGES.double(), "labels": LABELS}
    text = model.text_features()
    logits = model(batch["pixel_values"])
    cos = (F.normalize(text, dim=-1) * F.normalize(model.zeroshot_text_features(), dim=-1)).sum(-1)
    expected = F.cross_entropy(logits, LABELS) + 8.0 * (1 - cos.mean())
    torch.testing.assert_close(model.training_step(batch), expected, rtol=1e-12, atol=1e-12)
    # The paper's form (Eq. 5): 1 - cos is half the squared distance of the unit vectors.
    half_sq = (F.normalize(text, dim=-1) - F.normalize(model.zeroshot_text_features(), dim=-1)).pow(2).sum(-1).mean() / 2
    torch.testing.assert_close(model.knowledge_loss(text), half_sq, rtol=1e-10, atol=1e-12)


def test_kgcoop_at_init_from_the_template_words_adds_nothing_and_pulls_back_after_a_step():
    """With ctx_init "a photo of a" and the template "a photo of a {}." the learned prompts start as the hand-crafted
    ones: the knowledge term is 0 and the loss is plain cross-entropy."""
    model = promptcore.wrap(tiny_clip(), vc.KgCoOpConfig(class_names=NAMES)).double()
    batch = {"pixel_values": IMAGES.double(), "labels": LABELS}
    assert abs(model.knowledge_loss(model.text_features()).item()) < 1e-12
    torch.testing.assert_close(model.training_step(batch), F.cross_entropy(model(batch["pixel_values"]), LABELS))
    perturbed(model)
    term = model.knowledge_loss(model.text_features())
    assert term > 0
    term.backward()
    with torch.no_grad():
        model.prompts.ctx -= 0.1 * model.prompts.ctx.grad
    assert model.knowledge_loss(model.text_features()) < term


def test_kgcoop_moves_to_new_classes_and_embeds_their_prompts_when_training_goes_on():
    model = promptcore.wrap(tiny_clip(), vc.KgCoOpConfig(class_names=NAMES[:2]))
    model.zeroshot_text_features()
    model.set_class_names(["boat", "plane", "horse"])
    assert model(IMAGES).shape == (3, 3) and model.zeroshot_text is None  # evaluation embeds nothing
    model.training_step({"pixel_values": IMAGES, "labels": torch.tensor([0, 1, 2])})
    assert model.zeroshot_text.shape == (3, 32)


# ----- PromptSRC ----------------------------------------------------------------------------------------------------
TWO_TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def promptsrc(**kw):
    return promptcore.wrap(tiny_clip().double(), vc.PromptSRCConfig(class_names=NAMES, depth=2, templates=TWO_TEMPLATES, **kw)).double()


def test_promptsrc_frozen_text_averages_raw_template_features_then_normalises():
    """Textual diversity as PromptSRC's VLPromptLearner computes fixed_embeddings: encode_text of every template,
    the mean of the raw features, normalised (zero-shot CLIP would normalise each template first)."""
    model = promptsrc()
    tok = get_tokenizer(None, 77)
    per = [model.backbone.encode_text(tok([t.format(n) for n in NAMES])) for t in TWO_TEMPLATES]
    torch.testing.assert_close(model.zeroshot_text_features(), F.normalize((per[0] + per[1]) / 2, dim=-1))
    default = promptcore.wrap(tiny_clip(), vc.PromptSRCConfig(class_names=NAMES[:1], depth=2))
    assert default.config.templates == "promptsrc:imagenet60" and default.zeroshot_text_features().shape == (1, 32)


def test_promptsrc_loss_is_the_official_sum_of_terms():
    model = perturbed(promptsrc())
    batch = {"pixel_values": IMAGES.double(), "labels": LABELS}
    image = model.vision_tower.encode(batch["pixel_values"], model.vision_prompts())
    text = model.text_features()
    logits = model.backbone.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    frozen_image = F.normalize(model.backbone.encode_image(batch["pixel_values"]), dim=-1)
    frozen_logits = model.backbone.logit_scale.exp() * frozen_image @ model.zeroshot_text_features().T
    p_frozen = frozen_logits.softmax(-1)
    kl = (p_frozen * (p_frozen.log() - logits.log_softmax(-1))).sum() / logits.numel()
    text_l1 = (F.normalize(text, dim=-1) - model.zeroshot_text_features()).abs().mean()
    image_l1 = (F.normalize(image, dim=-1) - frozen_image).abs().mean()
    expected = F.cross_entropy(logits, LABELS) + kl + 25 * text_l1 + 10 * image_l1
    torch.testing.assert_close(model.training_step(batch), expected, rtol=1e-10, atol=1e-12)
    plain = promptsrc(text_loss_weight=0.0, image_loss_weight=0.0, logit_loss_weight=0.0)
    torch.testing.assert_close(plain.training_step(batch), F.cross_entropy(plain(batch["pixel_values"]), LABELS))


def test_promptsrc_evaluates_as_ivlp_and_moves_to_new_classes():
    model = promptsrc()
    ivlp = promptcore.wrap(tiny_clip(), vc.IVLPConfig(class_names=NAMES, depth=2, n_ctx=4)).double()
    ivlp.load_prompt_state_dict(model.prompt_state_dict())
    torch.testing.assert_close(model(IMAGES.double()), ivlp(IMAGES.double()), rtol=0, atol=0)
    model.zeroshot_text_features()
    model.set_class_names(["boat", "plane", "horse"])
    assert model(IMAGES.double()).shape == (3, 3) and model.zeroshot_text is None  # evaluation embeds nothing
    model.training_step({"pixel_values": IMAGES.double(), "labels": torch.tensor([0, 1, 2])})
    assert model.zeroshot_text.shape == (3, 32)


def test_promptsrc_bad_settings_are_named():
    with pytest.raises(ValueError, match="text_loss_weight: must be a number >= 0, found -1"):
        vc.PromptSRCConfig(text_loss_weight=-1)
    with pytest.raises(ValueError, match="templates: unknown template set 'imagenet60'.*promptsrc:imagenet60"):
        vc.PromptSRCConfig(templates="imagenet60")


# ----- Gaussian prompt aggregation ------------------------------------------------------------------------------------
def test_gpa_weights_are_the_official_normalised_gaussian():
    import numpy as np

    gpa = vc.GaussianPromptAggregation(mean=15, std=1)
    weights = gpa.weights(20)
    official = np.array([np.exp(-0.5 * ((a - 15) / 1) ** 2) / (1 * np.sqrt(2 * np.pi)) for a in range(1, 21)])
    np.testing.assert_allclose(weights, official / official.sum(), rtol=1e-12)
    assert max(range(20), key=weights.__getitem__) == 14  # epoch 15
    with pytest.raises(ValueError, match="std: must be > 0 epochs"):
        vc.GaussianPromptAggregation(mean=1, std=0)


class Recorder(promptcore.callbacks.Callback):
    """The prompts at each epoch end (runs before the aggregation, so it sees the trained ones)."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, trainer):
        self.seen.append({n: p.detach().clone() for n, p in trainer.model.named_prompt_parameters()})


class CtrlC(promptcore.callbacks.Callback):
    """Presses Ctrl-C after ``step``: the trainer finishes the next step and saves the state before it."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, info):
        if info.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def gpa_run(tmp_path=None, resume=False, callbacks=(), named=True):
    from promptcore import TrainConfig, Trainer
    from vpt.data import collate_images
    from vpt.synthetic import SyntheticImages

    model = promptsrc().float()
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.05, progress_bar=False, tensorboard=False, eval_every_epochs=0,
                      callbacks=[{"name": "gpa", "mean": 2, "std": 1}] if named else [])
    data = SyntheticImages(8, 4, image_size=32, seed=5)  # 2 steps per epoch
    Trainer(model, cfg, data, None, collate_images, run_dir=tmp_path, resume=resume, callbacks=callbacks).fit()
    return model


def test_gpa_loads_the_gaussian_weighted_sum_of_each_epochs_prompts():
    recorder = Recorder()
    gpa = vc.GaussianPromptAggregation(mean=2, std=1)
    model = gpa_run(callbacks=[recorder, gpa], named=False)
    weights = gpa.weights(3)
    assert len(recorder.seen) == 3 and gpa.added == [0, 1, 2]
    for name, p in model.named_prompt_parameters():
        expected = sum(w * seen[name] for w, seen in zip(weights, recorder.seen))
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(p.detach(), recorder.seen[-1][name])


@pytest.mark.slow
def test_gpa_resumed_run_aggregates_as_the_uninterrupted_one(tmp_path, capsys):
    from promptcore.trainer import TrainingInterrupted

    whole = gpa_run(tmp_path / "whole")
    with pytest.raises(TrainingInterrupted):
        gpa_run(tmp_path / "cut", callbacks=[CtrlC(step=4)])  # saved after step 5, in the last epoch
    assert "gpa: the run ended after 2 of 3 epochs; the prompts are the last trained ones" in capsys.readouterr().err
    resumed = gpa_run(tmp_path / "cut", resume=True)
    for (name, a), b in zip(whole.named_prompt_parameters(), resumed.prompt_parameters()):
        assert torch.equal(a, b), name
