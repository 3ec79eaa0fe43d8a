"""Contract cases of the vision methods: VPT, VFPT, pixel prompts, the linear probe and the CLIP methods, on tiny
random backbones."""

from __future__ import annotations

from typing import Any

import open_clip
import torch

import vpt.clip as vc
from harness import CASES, MethodCase
from promptcore import PromptedModel, wrap
from vpt import BackboneConfig, LinearProbeConfig, PixelPromptConfig, VFPTConfig, VPTConfig, create_model
from vpt.data import collate_images
from vpt.synthetic import SyntheticImages

VIT = BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs=dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4))
NAMES = ["cat", "golden retriever", "sea lion"]


def vit() -> torch.nn.Module:
    torch.manual_seed(1234)  # the same frozen backbone for every seed of the prompts
    return create_model(VIT)


def tiny_clip() -> torch.nn.Module:
    torch.manual_seed(1234)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=dict(context_length=24, vocab_size=49408, width=32, heads=2, layers=2),
    )


def images(model: PromptedModel) -> tuple[Any, Any]:
    return SyntheticImages(8, 3, image_size=32, seed=5), collate_images


def fast_flag(fast: bool | None) -> str:
    return "auto" if fast is None else "on" if fast else "off"


def text_path(fast: bool | None) -> str:
    return "auto" if fast is None else "fast" if fast else "reference"


def seeded(seed: int, backbone: torch.nn.Module, config: Any) -> PromptedModel:
    torch.manual_seed(seed)
    return wrap(backbone, config)


for method in ("vpt_shallow", "vpt_deep"):
    deep = method == "vpt_deep"
    CASES.add(f"vision:{method}", MethodCase(
        build=lambda seed, fast, m=method, d=deep: seeded(
            seed, vit(), VPTConfig(method=m, num_tokens=4, num_classes=3, fast=fast_flag(fast) if d else "auto")
        ),
        data=images,
        foreign=lambda seed, m=method: seeded(seed, vit(), VPTConfig(method=m, num_tokens=5, num_classes=3)),
        fast_spy="vpt.fast_deep.fast_block" if deep else None,
    ))

CASES.add("vision:vfpt", MethodCase(
    build=lambda seed, fast: seeded(seed, vit(), VFPTConfig(num_tokens=4, num_classes=3, fourier_share=0.5, fast=fast_flag(fast))),
    data=images,
    foreign=lambda seed: seeded(seed, vit(), VFPTConfig(num_tokens=4, num_classes=3, fourier_share=0.25)),
    fast_spy="vpt.fast_deep.fast_block",
))

for method in ("pixel_pad", "pixel_fixed_patch", "pixel_random_patch"):
    CASES.add(f"vision:{method}", MethodCase(
        build=lambda seed, fast, m=method: seeded(seed, vit(), PixelPromptConfig(method=m, prompt_size=4, num_classes=3)),
        data=images,
        foreign=lambda seed, m=method: seeded(seed, vit(), PixelPromptConfig(method=m, prompt_size=5, num_classes=3)),
    ))

CASES.add("vision:linear_probe", MethodCase(
    build=lambda seed, fast: seeded(seed, vit(), LinearProbeConfig(num_classes=3)),
    data=images,
    foreign=lambda seed: seeded(seed, vit(), LinearProbeConfig(num_classes=4)),
))

CLIP_CONFIGS = {
    "coop": lambda path, n=4: vc.CoOpConfig(class_names=NAMES, n_ctx=n, text_path=path),
    "cocoop": lambda path, n=4: vc.CoCoOpConfig(class_names=NAMES, n_ctx=n, ctx_init=None, text_path=path),
    "maple": lambda path, n=2: vc.MaPLeConfig(class_names=NAMES, n_ctx=n, depth=2, ctx_init=None, text_path=path),
    "ivlp": lambda path, n=2: vc.IVLPConfig(class_names=NAMES, n_ctx=n, depth=2, ctx_init=None, text_path=path),
}
for method, make in CLIP_CONFIGS.items():
    CASES.add(f"vision:{method}", MethodCase(
        build=lambda seed, fast, make=make: seeded(seed, tiny_clip(), make(text_path(fast))),
        data=images,
        foreign=lambda seed, make=make: seeded(seed, tiny_clip(), make("auto", 3)),
        fast_spy="vpt.clip.text.TextTower.encode_shared_prefix",
    ))

CASES.add("vision:clip_zeroshot", MethodCase(
    build=lambda seed, fast: seeded(seed, tiny_clip(), vc.ZeroShotCLIPConfig(class_names=NAMES)),
    data=images,
    foreign=lambda seed: seeded(seed, tiny_clip(), vc.ZeroShotCLIPConfig(class_names=NAMES[:2])),
))


# ----- CLIP methods with a frozen-CLIP regulariser (KgCoOp, PromptSRC) --------------------------------------------
REGULARISED_CLIP = {
    "kgcoop": lambda path, n=4: vc.KgCoOpConfig(class_names=NAMES, n_ctx=n, ctx_init=None, text_path=path),
    "promptsrc": lambda path, n=2: vc.PromptSRCConfig(
        class_names=NAMES, n_ctx=n, depth=2, ctx_init=None, templates=["a photo of a {}.", "a drawing of a {}."], text_path=path
    ),
}
for method, make in REGULARISED_CLIP.items():
    # Outputs: the logits and the training loss, whose extra terms run the text path too.
    CASES.add(f"vision:{method}", MethodCase(
        build=lambda seed, fast, make=make: seeded(seed, tiny_clip(), make(text_path(fast))),
        data=images,
        foreign=lambda seed, make=make: seeded(seed, tiny_clip(), make("auto", 3)),
        outputs=lambda model, batch: torch.stack([model.forward_batch(batch).sum(), model.training_step(batch)]),
        fast_spy="vpt.clip.text.TextTower.encode_shared_prefix",
    ))
