"""The CLIP methods served together: every row of a batch that mixes CoOp, CoCoOp, KgCoOp, MaPLe, IVLP and PromptSRC
prompts (different class names and counts, different vision prompt lengths and depths) equals its prompt alone; the
class-text features are computed once at load."""

from __future__ import annotations

import pytest
import torch

import promptcore
import vpt.clip as vc
from promptcore import PromptFileError
from promptcore.serving import Request
from vpt.serving import VisionBackend, load_prompted

from test_clip_methods import tiny_clip

CONFIGS = {
    "coop": vc.CoOpConfig(class_names=["cat", "dog", "sea lion"], n_ctx=4),
    "coop_csc": vc.CoOpConfig(class_names=["tree", "car"], n_ctx=2, class_specific_context=True, class_token_position="middle"),
    "cocoop": vc.CoCoOpConfig(class_names=["cat", "golden retriever", "tree", "car"]),
    "kgcoop": vc.KgCoOpConfig(class_names=["apple", "pear"], n_ctx=3),
    "maple": vc.MaPLeConfig(class_names=["cat", "dog", "tree"], depth=2),
    "ivlp": vc.IVLPConfig(class_names=["sea", "sky", "sand", "rock", "grass"], depth=2, vision_n_ctx=3, vision_depth=1),
    "promptsrc": vc.PromptSRCConfig(class_names=["cat", "dog"], n_ctx=2, depth=1, templates=["a photo of a {}."]),
}
ORDER = ["maple", "coop", "cocoop", "ivlp", "kgcoop", "promptsrc", "coop_csc", "cocoop", "maple", "coop"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root, out = tmp_path_factory.mktemp("clip"), {}
    for i, (name, config) in enumerate(CONFIGS.items()):
        model = promptcore.wrap(tiny_clip(), config)
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in model.prompt_parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=generator))
        out[name] = model.save_prompts(root / name)
    return out


def alone(clip, name, folder, image):
    model = promptcore.wrap(clip, CONFIGS[name]).to(next(clip.parameters()).dtype)
    model.load_prompts(folder)
    with torch.no_grad():
        return model.eval()(image)[0]


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_every_row_of_a_mixed_clip_batch_equals_its_prompt_alone(folders, dtype, atol):
    clip = tiny_clip().to(dtype)
    backend = VisionBackend(clip)
    prompts = {n: backend.open_prompt(folders[n], n) for n in CONFIGS}
    assert {p.route for p in prompts.values()} == {"clip"}
    images = torch.randn(len(ORDER), 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=dtype)
    logits = backend.logits([Request(prompts[n], "classify", images[i]) for i, n in enumerate(ORDER)])
    assert backend.last_routes == [("clip", len(ORDER))]  # one image forward for all of them
    for i, name in enumerate(ORDER):
        expected = alone(clip, name, folders[name], images[i : i + 1])
        assert logits[i].shape == (len(CONFIGS[name].class_names),)
        torch.testing.assert_close(logits[i], expected, rtol=0, atol=atol, msg=f"row {i} ({name})")


def test_class_text_features_are_computed_once_at_load(folders, monkeypatch):
    backend = VisionBackend(tiny_clip())
    prompt = backend.open_prompt(folders["coop"], "coop")
    cocoop = backend.open_prompt(folders["cocoop"], "cocoop")
    assert prompt.cache["text"].shape == (3, 32) and "text" not in cocoop.cache  # CoCoOp's depend on the image
    assert prompt.info.classes == ["cat", "dog", "sea lion"]
    assert prompt.info.nbytes >= prompt.cache["text"].numel() * 4
    calls = []
    monkeypatch.setattr(vc.CoOp, "text_features", lambda self: calls.append(1))
    images = torch.randn(2, 3, 32, 32)
    out = backend.classify([Request(prompt, "classify", images[0], {"top_k": 1}), Request(cocoop, "classify", images[1], {"top_k": 4})])
    assert calls == [] and len(out[0].labels) == 1 and sorted(out[1].labels) == sorted(CONFIGS["cocoop"].class_names)


def test_load_prompted_rebuilds_a_clip_method_and_refuses_other_weights(folders):
    clip = tiny_clip()
    model = load_prompted(folders["kgcoop"], clip)
    assert isinstance(model, vc.KgCoOp) and model.config.weight == 8.0 and model.config.n_ctx == 3
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(image)[0], alone(clip, "kgcoop", folders["kgcoop"], image), rtol=0, atol=0)
    with pytest.raises(PromptFileError, match="weights fingerprint"):
        VisionBackend(tiny_clip(seed=1)).open_prompt(folders["maple"], "maple")


def test_a_method_without_a_shared_forward_runs_alone_in_its_own_group(folders, tmp_path):
    clip = tiny_clip()
    zeroshot = promptcore.wrap(clip, vc.ZeroShotCLIPConfig(class_names=["cat", "dog"])).save_prompts(tmp_path / "zs")
    backend = VisionBackend(clip)
    prompts = {"zs": backend.open_prompt(zeroshot, "zs"), "coop": backend.open_prompt(folders["coop"], "coop")}
    assert prompts["zs"].route == "model"
    order = ["zs", "coop", "zs"]
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    logits = backend.logits([Request(prompts[n], "classify", images[i]) for i, n in enumerate(order)])
    assert backend.last_routes == [("model", 2), ("clip", 1)]
    reference = promptcore.wrap(clip, vc.ZeroShotCLIPConfig(class_names=["cat", "dog"])).eval()
    with torch.no_grad():
        for i in (0, 2):
            torch.testing.assert_close(logits[i], reference(images[i : i + 1])[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits[1], alone(clip, "coop", folders["coop"], images[1:2]), rtol=0, atol=1e-5)
