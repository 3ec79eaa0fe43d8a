"""Serving vision prompts: folders rebuild their model alone, mixed batches equal each prompt alone (token prompts of
any length, shallow and deep, VFPT, pixel prompts, linear probes, heads of different sizes), the fast VPT-deep path
runs in them, bad folders and bad requests are refused, and merged banks equal their folders."""

from __future__ import annotations

import io
import json
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

import vpt
from promptcore import PromptFileError, UserError
from promptcore.serving import BACKENDS, LimitError, Limits, LoadedPrompt, Request, backend_for
from vpt import BackboneConfig, LinearProbeConfig, PixelPromptConfig, VFPTConfig, VPTConfig
from vpt import fast_deep
from vpt.backbones import token_backbone
from vpt.serving import VisionBackend, build_vision_backend, load_prompted, merge_prompts, record_backbone

from test_backbones import TINY, images, tiny

SECTION = BackboneConfig(
    "timm:vit_tiny_patch16_224",
    pretrained=False,
    kwargs=dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, reg_tokens=1),
)
SEED = 7

CONFIGS = {
    "shallow2": VPTConfig(method="vpt_shallow", num_tokens=2, num_classes=3),
    "shallow5": VPTConfig(method="vpt_shallow", num_tokens=5, num_classes=4, head="backbone_pool"),
    "deep3": VPTConfig(method="vpt_deep", num_tokens=3, num_classes=5),
    "deep6_mean": VPTConfig(method="vpt_deep", num_tokens=6, num_classes=2, head="prompt_mean"),
    "deep4_proj": VPTConfig(method="vpt_deep", num_tokens=4, num_classes=3, projection=8),
    "vfpt": VFPTConfig(num_tokens=4, num_classes=3, fourier_share=0.5),
    "pixel_pad": PixelPromptConfig(method="pixel_pad", prompt_size=4, num_classes=3),
    "pixel_patch": PixelPromptConfig(method="pixel_fixed_patch", prompt_size=6, num_classes=7),
    "probe": LinearProbeConfig(num_classes=6),
}


def backbone(seed: int = SEED) -> torch.nn.Module:
    torch.manual_seed(seed)
    return vpt.create_model(SECTION)


def train_folder(path, base, config, seed, section=SECTION):
    """A prompt folder with random (non-zero) prompts and head, as training would leave it."""
    model = vpt.wrap(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=generator))
    record_backbone(model, section, SEED)
    return model.save_prompts(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root, base = tmp_path_factory.mktemp("prompts"), backbone()
    return {name: train_folder(root / name, base, cfg, i) for i, (name, cfg) in enumerate(CONFIGS.items())}


def alone(base, name, folder, images):
    """Each image through the ordinary model of ``folder`` alone (``vpt.wrap`` + ``load_prompts``)."""
    model = vpt.wrap(base, CONFIGS[name])
    model = model.to(next(base.parameters()).dtype)
    model.load_prompts(folder)
    model.eval()
    with torch.no_grad():
        return [model(images[i : i + 1])[0] for i in range(len(images))]


@contextmanager
def fast_block_calls():
    original, calls = fast_deep.fast_block, [0]

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    fast_deep.fast_block = counting
    try:
        yield calls
    finally:
        fast_deep.fast_block = original


def mixed_rows(backend, folders, names, images):
    prompts = {n: backend.open_prompt(folders[n], n) for n in set(names)}
    requests = [Request(prompts[n], "classify", images[i]) for i, n in enumerate(names)]
    with fast_block_calls() as calls:
        logits = backend.logits(requests)
    return logits, calls[0]


ORDER = ["deep3", "shallow2", "pixel_pad", "deep6_mean", "probe", "shallow5", "vfpt", "deep4_proj", "pixel_patch", "deep3", "shallow2", "probe"]


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_every_row_of_a_mixed_batch_equals_its_prompt_alone(folders, dtype, atol):
    base = backbone().to(dtype)
    images = torch.randn(len(ORDER), 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=dtype)
    backend = VisionBackend(base)
    logits, fast_calls = mixed_rows(backend, folders, ORDER, images)
    assert fast_calls > 0  # the deep rows ran on the exact fast path
    assert sorted(backend.last_routes) == [("pooled", 4), ("tokens", 8)]  # one forward per route
    for i, name in enumerate(ORDER):
        expected = alone(base, name, folders[name], images[i : i + 1])[0]
        assert logits[i].shape == expected.shape and logits[i].dtype == dtype
        torch.testing.assert_close(logits[i], expected, rtol=0, atol=atol, msg=f"row {i} ({name})")


@pytest.mark.parametrize("names", [["shallow2", "shallow5"], ["deep3", "deep6_mean", "deep4_proj"], ["shallow5", "deep3"]])
def test_lengths_and_depths_mix_in_one_token_forward(folders, names):
    base = backbone().double()
    order = names * 2
    images = torch.randn(len(order), 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    backend = VisionBackend(base)
    logits, _ = mixed_rows(backend, folders, order, images)
    assert backend.last_routes == [("tokens", len(order))]
    for i, name in enumerate(order):
        torch.testing.assert_close(logits[i], alone(base, name, folders[name], images[i : i + 1])[0], rtol=0, atol=1e-10)


def test_classify_gives_top_k_labels_of_each_prompts_classes(folders):
    base = backbone()
    backend = VisionBackend(base)
    deep = backend.open_prompt(folders["deep3"], "deep")
    probe = backend.open_prompt(folders["probe"], "probe")
    assert isinstance(deep, LoadedPrompt) and deep.info.name == "deep" and deep.info.operations == ("classify",)
    assert deep.info.method == "vpt_deep" and 0 < deep.info.nbytes < backend.backbone_nbytes
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    out = backend.classify([Request(deep, "classify", images[0], {"top_k": 2}), Request(probe, "classify", images[1], {"top_k": 10})])
    assert len(out[0].labels) == 2 and len(out[1].labels) == 6  # top_k past the class count gives them all
    probs = alone(base, "probe", folders["probe"], images[1:])[0].softmax(-1)
    assert out[1].indices == probs.argsort(descending=True).tolist()
    assert out[1].scores == pytest.approx(probs.sort(descending=True).values.tolist(), abs=1e-6)
    assert out[1].labels == [str(i) for i in out[1].indices]  # a folder without class names: the indices


def test_load_prompted_rebuilds_model_and_backbone_from_the_folder_alone(folders):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    meta = json.loads((folders["vfpt"] / "prompt_config.json").read_text())
    assert meta["method_config"]["fourier_share"] == 0.5 and meta["model"]["name"] == SECTION.name
    assert meta["backbone_seed"] == SEED
    torch.manual_seed(123)  # the global seed does not matter: the folder's seed rebuilds the random backbone
    model = load_prompted(folders["vfpt"])
    assert isinstance(model, vpt.VFPTModel) and not model.training
    expected = torch.stack(alone(backbone(), "vfpt", folders["vfpt"], images))
    with torch.no_grad():
        rebuilt = torch.stack([model(images[i : i + 1])[0] for i in range(len(images))])
    torch.testing.assert_close(rebuilt, expected, rtol=0, atol=0)
    with pytest.raises(PromptFileError, match=r"records weights fingerprint \w+ .*has weights fingerprint \w+"):
        load_prompted(folders["vfpt"], backbone(seed=1))


def test_vpt_train_records_what_serving_needs_and_predict_needs_no_config(tmp_path, capsys):
    from vpt.cli import main

    out = tmp_path / "run"
    sets = ["train.epochs=1", "data.synthetic.num_train=32", "data.synthetic.num_eval=8", "train.seed=11"]
    assert main(["train", "-c", "configs/smoke/vpt_tiny.yaml", *[a for s in sets for a in ("--set", s)], "-o", str(out)]) == 0
    meta = json.loads((out / "last" / "prompt_config.json").read_text())
    assert meta["method_config"]["num_tokens"] == 4 and meta["model"]["kwargs"]["depth"] == 2
    assert meta["backbone_seed"] == 11 and len(meta["class_names"]) == 4
    model = load_prompted(out / "last")
    assert model.backbone_fingerprint() == meta["backbone_fingerprint"]
    backend = build_vision_backend(None, [out / "last"])
    assert backend.open_prompt(out / "last", "tiny").info.classes == meta["class_names"]
    Image.new("RGB", (40, 30), "red").save(tmp_path / "red.png")
    capsys.readouterr()
    with_config = ["predict", "-c", "configs/smoke/vpt_tiny.yaml", "--set", "train.seed=11"]
    assert main([*with_config, "--prompts", str(out / "last"), str(tmp_path / "red.png"), "--top-k", "3"]) == 0
    expected = capsys.readouterr().out
    assert main(["predict", "--prompts", str(out / "last"), str(tmp_path / "red.png"), "--top-k", "3"]) == 0
    assert capsys.readouterr().out == expected and expected.count("\n") == 4  # the path and three labels
    assert main(["predict", "--set", "train.seed=1", "--prompts", str(out / "last"), str(tmp_path / "red.png")]) == 2
    assert "--set changes a run config; give it with -c CONFIG" in capsys.readouterr().err


def test_vision_backend_is_registered_and_builds_from_a_model_section(folders):
    assert "vision" in BACKENDS and backend_for("vision") is build_vision_backend
    backend = build_vision_backend({"name": SECTION.name, "pretrained": False, "kwargs": SECTION.kwargs}, [folders["deep3"]])
    assert backend.fingerprint == VisionBackend(backbone()).fingerprint  # the folders' seed rebuilt the same weights
    with pytest.raises(UserError, match="vision prompts classify images"):
        next(iter(backend.generate([])))


def test_a_prompt_for_other_weights_is_refused_naming_both_fingerprints(folders):
    backend = VisionBackend(backbone(seed=1))
    theirs = json.loads((folders["deep3"] / "prompt_config.json").read_text())["backbone_fingerprint"]
    with pytest.raises(PromptFileError, match=f"records weights fingerprint {theirs}.*has weights fingerprint {backend.fingerprint}"):
        backend.open_prompt(folders["deep3"], "deep")


def test_corrupt_old_and_bank_folders_are_refused(folders, tmp_path):
    backend = VisionBackend(backbone())
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in folders["deep3"].iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / "prompts.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PromptFileError, match="truncated or corrupt"):
        backend.open_prompt(corrupt, "bad")
    old = tmp_path / "old"
    model = vpt.wrap(backbone(), CONFIGS["deep3"])
    model.save_prompts(old, extra={"method_config": None})
    with pytest.raises(PromptFileError, match="records no method_config.*vpt.wrap"):
        backend.open_prompt(old, "old")
    no_model = model.save_prompts(tmp_path / "no_model")  # saved from Python without record_backbone
    with pytest.raises(PromptFileError, match="records no model section.*backbone="):
        load_prompted(no_model)
    assert load_prompted(folders["deep3"], backbone()).config.num_tokens == 3  # the others still load
    bank = merge_prompts(tmp_path / "bank", [folders["deep3"], folders["deep3"]])
    with pytest.raises(UserError, match="prompt bank of 2 tasks; serve the single-task folders"):
        backend.open_prompt(bank, "bank")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_prepare_preprocesses_as_the_prompt_was_trained_and_refuses_bad_requests(folders, tmp_path):
    base = backbone()
    model = vpt.wrap(base, CONFIGS["deep3"])
    model.record_in_prompt_files(preprocessing={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    folder = model.save_prompts(tmp_path / "p")
    backend = VisionBackend(base, limits=Limits(max_image_pixels=48 * 48, max_top_k=3))
    prompt = backend.open_prompt(folder, "p")
    request = backend.prepare(prompt, "classify", png(40, 40), {"top_k": 2})
    expected = (torch.tensor([10, 200, 30]) / 255 - 0.5) / 0.25
    torch.testing.assert_close(request.input, expected.view(3, 1, 1).expand(3, 32, 32), rtol=0, atol=1e-6)
    same = backend.prepare(prompt, "classify", Image.open(io.BytesIO(png(40, 40))), {})
    assert torch.equal(same.input, request.input) and same.params == {"top_k": 3}  # the default 5, within the limit
    with pytest.raises(UserError, match="image: not an image file"):
        backend.prepare(prompt, "classify", b"GIF89a not really", {})
    with pytest.raises(UserError, match="image: the image data cannot be decoded"):
        backend.prepare(prompt, "classify", png(40, 40)[:60], {})
    with pytest.raises(UserError, match="image: expected encoded image bytes or a PIL image, got str"):
        backend.prepare(prompt, "classify", "cat.png", {})
    with pytest.raises(LimitError, match=r"image: 49x48 = 2352 pixels is over the limit of 2304"):
        backend.prepare(prompt, "classify", png(49, 48), {})
    with pytest.raises(LimitError, match="top_k: 4 is over the limit of 3"):
        backend.prepare(prompt, "classify", png(40, 40), {"top_k": 4})
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UserError, match="top_k: must be a positive integer"):
            backend.prepare(prompt, "classify", png(40, 40), {"top_k": bad})
    with pytest.raises(UserError, match="operation: vision prompts classify images"):
        backend.prepare(prompt, "generate", png(40, 40), {})


def test_loaded_prompts_move_between_devices_without_the_backbone(folders):
    base = backbone()
    backend = VisionBackend(base)
    prompt = backend.open_prompt(folders["deep4_proj"], "p").to(torch.device("meta"))
    assert all(t.device.type == "meta" for t in prompt.model.prompt_parameters())
    assert prompt.cache["tokens"].device.type == "meta"
    assert all(p.device.type == "cpu" for p in base.parameters())


def test_an_unprojected_prompt_is_held_once(folders):
    prompt = VisionBackend(backbone()).open_prompt(folders["deep3"], "p")
    assert prompt.cache == {}  # its tokens are read from its weights at each batch, not kept as a second copy
    assert prompt.info.nbytes == sum(t.numel() * t.element_size() for t in prompt.model.prompt_state_dict().values())


@pytest.mark.parametrize("names", [["deep3", "deep3", "deep3"], ["pixel_pad", "pixel_pad"]])
def test_merged_bank_rows_equal_each_folder_alone(folders, tmp_path, names):
    base = backbone().double()
    sources = []
    for i, name in enumerate(names):  # separately trained folders of one method and size
        sources.append(train_folder(tmp_path / f"{name}{i}", backbone(), CONFIGS[name], 100 + i))
    bank = merge_prompts(tmp_path / "bank", sources)
    model = load_prompted(bank, base).double()
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    task_ids = torch.tensor([2, 0, 1, 1, 0, 2]) % len(names)
    with torch.no_grad():
        rows = model(images, task_ids)
    for i, t in enumerate(task_ids.tolist()):
        single = vpt.wrap(base, CONFIGS[names[0]]).double()
        single.load_prompts(sources[t])
        torch.testing.assert_close(rows[i], single.eval()(images[i : i + 1])[0], rtol=0, atol=1e-10)


def test_merge_prompts_cli_and_refusals(folders, tmp_path, capsys):
    from vpt.cli import main

    assert main(["merge-prompts", str(tmp_path / "bank"), str(folders["deep3"]), str(folders["deep3"])]) == 0
    meta = json.loads((tmp_path / "bank" / "prompt_config.json").read_text())
    assert meta["num_tasks"] == 2 and meta["method_config"]["num_tasks"] == 2 and len(meta["tasks"]) == 2
    assert main(["merge-prompts", str(tmp_path / "b2"), str(folders["deep3"]), str(folders["deep4_proj"])]) == 2
    assert "differs from" in capsys.readouterr().err
    with pytest.raises(UserError, match="method 'linear_probe' has no prompt bank"):
        merge_prompts(tmp_path / "b3", [folders["probe"], folders["probe"]])
    with pytest.raises(UserError, match="at least two prompt folders"):
        merge_prompts(tmp_path / "b4", [folders["deep3"]])


def test_pixel_prompts_and_a_linear_probe_on_a_cnn_share_one_forward(tmp_path):
    section = BackboneConfig("timm:resnet10t", pretrained=False, kwargs={"num_classes": 0})
    torch.manual_seed(0)
    cnn = vpt.create_model(section).double()
    configs = {
        "pad": PixelPromptConfig(method="pixel_pad", prompt_size=3, num_classes=3, image_size=48),
        "patch": PixelPromptConfig(method="pixel_fixed_patch", prompt_size=8, num_classes=5, image_size=48),
        "probe": LinearProbeConfig(num_classes=4),
    }
    backend = VisionBackend(cnn)
    prompts = {}
    for i, (name, config) in enumerate(configs.items()):
        prompts[name] = backend.open_prompt(train_folder(tmp_path / name, cnn, config, i, section), name)
    order = ["pad", "probe", "patch", "pad", "probe"]
    images = torch.randn(len(order), 3, 48, 48, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    logits = backend.logits([Request(prompts[n], "classify", images[i]) for i, n in enumerate(order)])
    assert backend.last_routes == [("pooled", len(order))]
    for i, name in enumerate(order):
        model = vpt.wrap(cnn, configs[name]).double()
        model.load_prompts(tmp_path / name)
        with torch.no_grad():
            torch.testing.assert_close(logits[i], model.eval()(images[i : i + 1])[0], rtol=0, atol=1e-10)


FAMILY_CONFIGS = [
    VPTConfig(method="vpt_shallow", num_tokens=2, num_classes=3),
    VPTConfig(method="vpt_deep", num_tokens=3, num_classes=2, head="prompt_mean"),
    VPTConfig(method="vpt_deep", num_tokens=5, num_classes=4, head="backbone_pool"),
]


@pytest.mark.parametrize("key", sorted(TINY))
def test_token_prompts_mix_on_every_backbone_family(key, tmp_path):
    base = tiny(key)
    backend = VisionBackend(base)
    prompts = [backend.open_prompt(train_folder(tmp_path / str(i), base, c, i), str(i)) for i, c in enumerate(FAMILY_CONFIGS)]
    fast = fast_deep.fast_unsupported(token_backbone(base), token_backbone(base).depth) is None
    assert {p.route for p in prompts} == {"tokens" if fast else "model"}
    for order in ([2, 0, 1, 0, 2], [0, 0]):  # mixed, and shallow prompts alone (no deep keys at all)
        x = images(len(order))
        with fast_block_calls() as calls:
            logits = backend.logits([Request(prompts[t], "classify", x[i]) for i, t in enumerate(order)])
        assert (calls[0] > 0) == fast
        for i, t in enumerate(order):
            model = vpt.wrap(base, FAMILY_CONFIGS[t]).double()
            model.load_prompts(tmp_path / str(t))
            with torch.no_grad():
                torch.testing.assert_close(logits[i], model.eval()(x[i : i + 1])[0], rtol=0, atol=1e-10)
