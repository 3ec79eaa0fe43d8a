"""Tiny random vision-language models, their processors and data, built offline (no hub download): for tests, the
documentation's examples and smoke runs. A tiny model's outputs mean nothing; its shapes and code paths are the
real architecture's.

- :func:`tiny_backbone`: a random ``...ForConditionalGeneration`` (what ``model.name: random:qwen2_vl`` builds);
- :func:`tiny_processor`: the architecture's real processor over a word-level tokenizer of the tiny vocabulary
  (:data:`WORDS`), with a chat template of its own;
- :func:`synthetic_rows`: seeded rows of a one-colour picture with a question, its answer, a caption and a class
  label (``data.source: synthetic``);
- :func:`tiny_examples`, :func:`tiny_batch`: token-level examples without a processor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptcore.data import split_seed
from promptcore.errors import UserError

from .data import collate_examples
from .families import FAMILIES

VOCAB = 99
IMAGE, VIDEO, VISION_START, VISION_END = 95, 96, 97, 98
TEXT_IDS = (3, 90)  # ordinary text tokens are drawn from this range; 0-2 are pad / bos / eos
_TEXT = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
_VISION_QWEN = dict(patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_chans=3, depth=2, num_heads=2)
LLAVA_IMAGE_SIZE, LLAVA_PATCH = 16, 4
_VIT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=LLAVA_IMAGE_SIZE, patch_size=LLAVA_PATCH)
"""The CLIP / SigLIP / Idefics3 vision towers of the tiny LLaVA, PaliGemma and Idefics3: 16 x 16 pixels (an
Idefics3 tile), 4 x 4 patches."""
ONEVISION_GRIDS = [[16, 16], [16, 32], [32, 16], [32, 32]]
"""The tiny LLaVA-OneVision's anyres grids (height, width in pixels): one to four 16 x 16 tiles."""
IDEFICS3_SCALE = 2
"""The tiny Idefics3 connector's pixel shuffle: 2 x 2 patches become one image token (4 tokens a tile)."""
IDEFICS3_TAGS = tuple(f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6))
"""Idefics3's tile tags, ordinary words of its tiny tokenizer (as in SmolVLM's)."""

COLOURS = ("red", "green", "blue", "yellow", "black", "white")
_RGB = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40), "black": (10, 10, 10), "white": (245, 245, 245)}
QUESTIONS = ("what colour is it ?", "what colour is the picture ?", "which colour does the image show ?")
SIZES = ((16, 16), (32, 16), (16, 32))  # (width, height): on Qwen, three image grids
WORDS = (
    "<pad>", "<s>", "</s>", *COLOURS,
    *"user assistant : ? . , what which colour color is it the a an picture image photo show shows does of describe this in one word".split(),
)
"""The tiny tokenizer's words, ids 0 onwards (pad, BOS, EOS first); the ids up to the image token are filler
words ``w<id>``, and the architecture's own special tokens take ids 95-98."""

# The chat template of the tiny processors: "user : <image> QUESTION assistant :", the image part being the
# architecture's own placeholder (Qwen wraps it in vision start / end tokens, as its real template does).
_CHAT = (
    "{% for message in messages %}{{ message['role'] }} :{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %} IMAGE{% elif part['type'] == 'text' %}"
    " {{ part['text'] }}{% endif %}{% endfor %}{% endif %} {% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
)


def tiny_backbone(model_type: str, seed: int = 0, vision_config: dict[str, Any] | None = None, **text_config: Any) -> nn.Module:
    """A tiny random ``...ForConditionalGeneration`` of ``model_type`` (``llava``, ``qwen2_vl``, ``qwen2_5_vl``,
    ``llava_onevision``, ``paligemma``, ``idefics3``):
    hidden width 32, 2 layers in the language model and in the vision tower, eval mode. ``text_config`` overrides
    fields of the language model's config (``initializer_range=0.3`` gives outputs a prompt can steer; the widths
    must stay those of the vision tower's output), ``vision_config`` fields of the vision tower's (on Qwen,
    ``initializer_range=0.3`` gives a tower whose features vision prompts move clearly: at the default 0.02 its
    attention is nearly uniform and its output small). Qwen2.5-VL's tower attends in windows of 2 x 2 merged
    patches (16 pixels a side) in block 0 and fully in block 1."""
    import transformers

    if model_type not in FAMILIES:
        raise UserError(f"model_type: {model_type!r} has no tiny model; one of {FAMILIES.names()}")
    torch.manual_seed(seed)
    text_fields = dict(_TEXT, **text_config)
    vision_fields = vision_config or {}
    vit = {**_VIT, **vision_fields}
    if model_type == "llava":
        config = transformers.LlavaConfig(
            text_config=dict(model_type="llama", **text_fields),
            vision_config=dict(model_type="clip_vision_model", **vit),
            image_token_id=IMAGE, vision_feature_layer=-1, vision_feature_select_strategy="default",
        )
        return transformers.LlavaForConditionalGeneration(config).eval()
    if model_type == "llava_onevision":
        config = transformers.LlavaOnevisionConfig(
            text_config=dict(model_type="qwen2", **text_fields), vision_config=dict(model_type="siglip_vision_model", **vit),
            image_token_id=IMAGE, video_token_id=VIDEO, vision_feature_layer=-1, vision_feature_select_strategy="full",
            image_grid_pinpoints=ONEVISION_GRIDS, vision_aspect_ratio="anyres_max_9",
        )
        return transformers.LlavaOnevisionForConditionalGeneration(config).eval()
    if model_type == "paligemma":
        config = transformers.PaliGemmaConfig(
            text_config=dict(model_type="gemma", head_dim=16, **text_fields),
            vision_config=dict(model_type="siglip_vision_model", projection_dim=32, **vit),
            image_token_index=IMAGE, projection_dim=32, hidden_size=32, vocab_size=VOCAB,
        )
        return transformers.PaliGemmaForConditionalGeneration(config).eval()
    if model_type == "idefics3":
        config = transformers.Idefics3Config(
            text_config=dict(model_type="llama", **text_fields), vision_config=vit, scale_factor=IDEFICS3_SCALE,
            image_token_id=IMAGE, pad_token_id=text_fields["pad_token_id"],
        )
        return transformers.Idefics3ForConditionalGeneration(config).eval()
    text = dict(text_fields, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)
    if model_type == "qwen2_vl":
        vision = {**_VISION_QWEN, "embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2, **vision_fields}
        return transformers.Qwen2VLForConditionalGeneration(transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)).eval()
    vision = {
        **_VISION_QWEN, "hidden_size": 32, "out_hidden_size": 32, "intermediate_size": 37, "window_size": 16, "fullatt_block_indexes": [1], **vision_fields,
    }
    return transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)).eval()


_SPECIAL = {
    "llava": ("<image>", "<video>", "<vs>", "<ve>"),
    "llava_onevision": ("<image>", "<video>", "<vs>", "<ve>"),
    "paligemma": ("<image>", "<video>", "<vs>", "<ve>"),
    "idefics3": ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"),
}
"""Each architecture's special tokens at ids 95-98, the image placeholder first (Qwen: :func:`tiny_processor`)."""


def tiny_processor(model_type: str):
    """The real processor of ``model_type`` (``llava``, ``qwen2_vl``, ``qwen2_5_vl``, ``llava_onevision``,
    ``paligemma``, ``idefics3``) for :func:`tiny_backbone`: a word-level tokenizer of :data:`WORDS` (padding on the
    left; unknown words map to the first filler word), the architecture's image processor at the tiny vision tower's
    sizes (Qwen: 16 to 32 pixels a side, dynamic; LLaVA and PaliGemma: 16 x 16; LLaVA-OneVision: the 16 x 16 base
    image and the tiles of the best of :data:`ONEVISION_GRIDS`; Idefics3: the longest side resized to 32 and split into
    16 x 16 tiles plus the whole image) and a chat template (``user : <image> TEXT assistant :``; PaliGemma has
    none, as its released processors: its processor writes ``<image>... <bos> TEXT``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if model_type not in FAMILIES:
        raise UserError(f"model_type: {model_type!r} has no tiny processor; one of {FAMILIES.names()}")
    special = list(_SPECIAL.get(model_type, ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")))
    words = [*WORDS, *(IDEFICS3_TAGS if model_type == "idefics3" else ())]
    words = [*words, *[f"w{i}" for i in range(len(words), IMAGE)], *special]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[len(WORDS)]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", additional_special_tokens=special, padding_side="left"
    )
    qwen = model_type in ("qwen2_vl", "qwen2_5_vl")
    chat = _CHAT.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>" if qwen else "<image>")
    size = LLAVA_IMAGE_SIZE
    if model_type == "llava":
        from transformers import CLIPImageProcessor, LlavaProcessor

        images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return LlavaProcessor(images, tokenizer, patch_size=LLAVA_PATCH, vision_feature_select_strategy="default", chat_template=chat, num_additional_image_tokens=1)
    if model_type == "llava_onevision":
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

        images = LlavaOnevisionImageProcessor(size={"height": size, "width": size}, image_grid_pinpoints=ONEVISION_GRIDS)
        return LlavaOnevisionProcessor(
            image_processor=images, tokenizer=tokenizer, video_processor=LlavaOnevisionVideoProcessor(size={"height": size, "width": size}),
            num_image_tokens=(size // LLAVA_PATCH) ** 2, vision_feature_select_strategy="full", chat_template=chat,
        )
    if model_type == "paligemma":
        from transformers import PaliGemmaProcessor, SiglipImageProcessor

        images = SiglipImageProcessor(size={"height": size, "width": size}, image_seq_length=(size // LLAVA_PATCH) ** 2)
        return PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    if model_type == "idefics3":
        from transformers import Idefics3ImageProcessor, Idefics3Processor

        images = Idefics3ImageProcessor(do_image_splitting=True, max_image_size={"longest_edge": size}, size={"longest_edge": 2 * size})
        return Idefics3Processor(images, tokenizer, image_seq_len=(size // LLAVA_PATCH // IDEFICS3_SCALE) ** 2, chat_template=chat)
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = dict(patch_size=_VISION_QWEN["patch_size"], temporal_patch_size=_VISION_QWEN["temporal_patch_size"], merge_size=_VISION_QWEN["spatial_merge_size"])
    images = Qwen2VLImageProcessor(min_pixels=16 * 16, max_pixels=32 * 32, **sizes)
    if model_type == "qwen2_vl":
        from transformers import Qwen2VLProcessor as cls
    else:
        from transformers import Qwen2_5_VLProcessor as cls
    return cls(image_processor=images, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=chat)


def synthetic_rows(num_rows: int, seed: int = 0, split: str = "train") -> dict[str, list]:
    """``num_rows`` seeded rows (columns ``image``, ``question``, ``answer``, ``caption``, ``label``): a picture of
    one colour of :data:`COLOURS` in one of :data:`SIZES`, a question about its colour, the colour as the answer,
    ``a <colour> picture`` as the caption, the colour's index as the label. ``split`` draws a disjoint sample of
    the same kind (:func:`promptcore.data.split_seed`)."""
    from PIL import Image

    if num_rows < 1:
        raise UserError(f"num_samples: a synthetic split needs at least one row, got {num_rows}")
    generator = torch.Generator().manual_seed(split_seed(seed, split))
    rows: dict[str, list] = {"image": [], "question": [], "answer": [], "caption": [], "label": []}
    for _ in range(num_rows):
        colour, question, size = (int(torch.randint(n, (1,), generator=generator)) for n in (len(COLOURS), len(QUESTIONS), len(SIZES)))
        name = COLOURS[colour]
        rows["image"].append(Image.new("RGB", SIZES[size], _RGB[name]))
        rows["question"].append(QUESTIONS[question])
        rows["answer"].append(name)
        rows["caption"].append(f"a {name} picture")
        rows["label"].append(colour)
    return rows


def tiny_examples(backbone: nn.Module, num_examples: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``num_examples`` examples of text, one image's placeholders, text, of different lengths (and, on Qwen,
    images of different sizes; on LLaVA-OneVision, 16 x 16 and 16 x 32 images, two and three tiles; on Idefics3,
    one or three tiles): each a dict of ``input_ids`` ``[L]`` and the image
    inputs of that one example. PaliGemma's are laid out as its processor lays them out (the image, BOS, text) and
    carry ``token_type_ids``: the first text is the prefix (0), the second the suffix (1)."""
    generator = torch.Generator().manual_seed(seed)
    model_type = backbone.config.model_type
    examples = []
    for i in range(num_examples):
        before = torch.randint(*TEXT_IDS, (2 + i,), generator=generator)
        after = torch.randint(*TEXT_IDS, (3 + 2 * i,), generator=generator)
        if model_type == "llava":
            n = (LLAVA_IMAGE_SIZE // LLAVA_PATCH) ** 2
            ids = torch.cat([before, torch.full((n,), IMAGE), after])
            pixels = torch.randn(1, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=generator)
            examples.append({"input_ids": ids, "pixel_values": pixels})
            continue
        if model_type == "paligemma":
            n = (LLAVA_IMAGE_SIZE // LLAVA_PATCH) ** 2
            ids = torch.cat([torch.full((n,), IMAGE), torch.tensor([1]), before, after])
            types = torch.cat([torch.zeros(n + 1 + len(before), dtype=torch.long), torch.ones(len(after), dtype=torch.long)])
            pixels = torch.randn(1, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=generator)
            examples.append({"input_ids": ids, "pixel_values": pixels, "token_type_ids": types})
            continue
        if model_type == "llava_onevision":
            height, width = (16, 16 + 16 * (i % 2))
            tiles = 2 + i % 2  # the base image and the grid's tiles
            n = tiny_processor(model_type)._get_number_of_features(height, width, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE)
            ids = torch.cat([before, torch.full((n,), IMAGE), after])
            pixels = torch.randn(1, tiles, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=generator)
            examples.append({"input_ids": ids, "pixel_values": pixels, "image_sizes": torch.tensor([[height, width]]), "batch_num_images": torch.tensor([1])})
            continue
        if model_type == "idefics3":
            tiles = 1 + 2 * (i % 2)
            per_tile = (LLAVA_IMAGE_SIZE // LLAVA_PATCH // IDEFICS3_SCALE) ** 2
            tags = [len(WORDS) + t for t in range(tiles - 1)] + [VISION_START]  # the tiles' tags, then <global-img>
            image = [torch.tensor([VIDEO, tag] + [IMAGE] * per_tile) for tag in tags]
            ids = torch.cat([before, *image, torch.tensor([VIDEO]), after])
            pixels = torch.randn(1, tiles, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=generator)
            mask = torch.ones(1, tiles, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, dtype=torch.long)
            examples.append({"input_ids": ids, "pixel_values": pixels, "pixel_attention_mask": mask})
            continue
        vision = backbone.config.vision_config
        grid = torch.tensor([[1, 4, 4 + 4 * (i % 2)]])
        n = int(grid.prod()) // vision.spatial_merge_size**2
        ids = torch.cat([before, torch.tensor([VISION_START]), torch.full((n,), IMAGE), torch.tensor([VISION_END]), after])
        patch = vision.in_chans * vision.temporal_patch_size * vision.patch_size**2
        pixels = torch.randn(int(grid.prod()), patch, generator=generator)
        examples.append({"input_ids": ids, "pixel_values": pixels, "image_grid_thw": grid})
    return examples


def tiny_batch(backbone: nn.Module, num_examples: int = 2, padding_side: str = "left", seed: int = 0) -> dict[str, Any]:
    """:func:`collate_examples` of :func:`tiny_examples`."""
    return collate_examples(tiny_examples(backbone, num_examples, seed), padding_side)
