"""The ``zeroshot`` head that vpt.clip adds to VPT models: fixed CLIP text embeddings of the class names."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import vpt
from vpt import BackboneConfig, VPTConfig, create_model
from vpt.clip import zeroshot_weights
from vpt.clip.tokens import get_tokenizer
from vpt.heads import HEADS

OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}
HF_CLIP = {"model_type": "clip_vision_model", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 128, "image_size": 32, "patch_size": 8}  # fmt: skip
IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def tiny_open_clip() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(BackboneConfig("open_clip:tiny", kwargs={"model_cfg": OPEN_CLIP})).double()


def test_zeroshot_head_uses_the_open_clip_text_tower():
    backbone = tiny_open_clip()
    names = ["cat", "dog", "bird"]
    model = vpt.wrap(backbone, VPTConfig(num_tokens=2, head="zeroshot", class_names=names)).double()
    assert model.config.num_classes == 3
    assert {n for n, _ in model.named_prompt_parameters()} == {"prompts.weight"}
    assert "head.class_embeddings" not in model.prompt_state_dict()
    weights = zeroshot_weights(backbone, get_tokenizer(None, backbone.context_length), names)
    tb = model.tokens
    h = tb.embed(IMAGES)
    p = model.prompt_tokens()[0]
    for i in range(tb.depth):
        h = tb.run_block(i, torch.cat([h[:, :1], p[i].expand(3, -1, -1), h[:, 1 + (2 if i else 0) :]], dim=1))
    h = torch.cat([h[:, :1], h[:, 3:]], dim=1)
    expected = backbone.logit_scale.exp() * F.normalize(tb.image_embedding(h), dim=-1) @ weights.t()
    torch.testing.assert_close(model(IMAGES), expected, rtol=0, atol=1e-10)


def test_zeroshot_head_needs_an_open_clip_model_class_names_and_one_task():
    hf_clip = create_model(BackboneConfig("hf:tiny-clip", kwargs={"config": HF_CLIP}))
    with pytest.raises(ValueError, match="head 'zeroshot' needs an open_clip model with its text tower, got hf:tiny-clip"):
        vpt.wrap(hf_clip, VPTConfig(num_tokens=2, head="zeroshot", class_names=["a", "b"]))
    with pytest.raises(ValueError, match="class_names: the 'zeroshot' head needs the class names"):
        vpt.wrap(tiny_open_clip(), VPTConfig(num_tokens=2, head="zeroshot", num_classes=2))
    with pytest.raises(ValueError, match="num_tasks: the 'zeroshot' head is one fixed head"):
        VPTConfig(head="zeroshot", class_names=["a", "b"], num_tasks=2)


@pytest.mark.slow
def test_the_head_comes_with_vpt_clip_and_a_config_naming_it_loads_the_plugin():
    assert HEADS.get("zeroshot").reads_prompt_outputs is False
    code = (
        "import sys, vpt; assert 'vpt.clip' not in sys.modules; "
        "vpt.VPTConfig(head='zeroshot', class_names=['a', 'b']); assert 'vpt.clip' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
