"""VPT in the vision tower of a vision-language model (``method: vlm_vpt``), with or without prompt rows in the
language model.

``num_tokens`` prompts go in before the tower's first block (``deep: false``, VPT-shallow), or fresh ones before
every block, replacing the previous block's prompt outputs (``deep: true``, VPT-deep). The tower's own code runs
every block; the prompts enter through forward hooks on its modules (on only while the prompted model runs the
backbone: the backbone alone stays the frozen model), and leave again before what reads the tower's output, so the
model's feature selection and projector see the sequence they were built for, and the number of image features
still matches the image placeholders. Two kinds of tower (:func:`tower_prompts`):

- A ViT that :mod:`vpt` sees as tokens (:func:`vpt.backbones.token_backbone`: LLaVA's ``CLIPVisionModel``,
  LLaVA-OneVision's and PaliGemma's ``SiglipVisionModel``; its width, depth, layers and prefix tokens are read there,
  never assumed). As :mod:`vpt.model` places them, the prompts go right after the prefix (class) token (SigLIP has
  none: first), and a hook on the tower takes them out of every hidden state it returns (:func:`token_prompt_hooks`).
- Qwen2-VL's and Qwen2.5-VL's towers (:class:`PackedTower`), which pack the patches of all images of a batch into
  one sequence and attend within the segments of ``cu_seqlens`` (:func:`packed_prompt_hooks`). Every image gets its
  own ``num_tokens`` prompt rows; before each block's attention, each segment is preceded by its image's prompt rows
  and ``cu_seqlens`` grows to hold them. Their rotary embedding is the identity (prompts have no position, so no
  patch sees them nearer or farther; their order does not matter to attention). Qwen2.5-VL attends in windows
  (112 pixels a side on the released models) in every block but ``fullatt_block_indexes`` (4 of 32). In its
  windowed blocks an image's prompt rows join each of its windows, and each prompt row's attention output is the
  mean over its windows, as VPT's own Swin implementation prepends the prompts to every window and averages their
  outputs. Prompts that attended only in the full-attention blocks would leave the windowed blocks' deep prompts
  without any path to the image features (replaced before they reach a full block: 28 of 32 layers of a VPT-deep
  prompt dead) and a shallow prompt unseen until the eighth block. The prompt rows leave before the 2 x 2 patch
  merger, so the merged features are the patches' alone.

Idefics3's tiled tower is neither: it is refused with the reason (:data:`REFUSED`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from promptcore import DeepSoftPrompt, SoftPrompt, register_method
from promptcore.errors import UnsupportedModelError
from textpt.config import trainable_dtype

from .config import VLMVisionPromptConfig
from .model import VLMPromptedModel

REFUSED = {
    "Idefics3VisionTransformer": (
        " (each of an image's tiles is masked patch by patch with a pixel attention mask, and the connector's pixel "
        "shuffle folds a fixed square grid of patch outputs into the image tokens)"
    ),
}
"""Why a vision tower that is neither a ViT :mod:`vpt` takes nor a :class:`PackedTower` cannot hold VPT prompts, by
its class name."""


PACKED = ("Qwen2VisionTransformerPretrainedModel", "Qwen2_5_VisionTransformerPretrainedModel")
"""The class names of the towers :class:`PackedTower` views."""


class PackedTower:
    """A vision tower that packs the patches of all images of a batch into one sequence ``[patches, width]``, image
    after image, and attends within the segments of ``cu_seqlens`` (Qwen2-VL's, and Qwen2.5-VL's with its windows:
    :data:`PACKED`).

    Attributes:
        model: the tower. width: its token width (``patch_embed.embed_dim``). depth: its number of blocks.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.width = int(model.patch_embed.embed_dim)
        self.depth = len(model.blocks)

    def block(self, index: int) -> nn.Module:
        """The module of block ``index`` (its ``attn`` is the attention the prompt rows join)."""
        return self.model.blocks[index]


class VLMVisionPromptModel(VLMPromptedModel):
    """VPT prompts in the vision tower of a frozen vision-language model (and optional language-model prompt rows).

    Args:
        backbone: a supported ``...ForConditionalGeneration`` model whose vision tower is a ViT (LLaVA,
            LLaVA-OneVision, PaliGemma) or packed (Qwen2-VL, Qwen2.5-VL).
        config: the method's config.
        name: the backbone's name recorded in prompt files. Other ``context`` a recipe passes is not used.

    Attributes:
        prompts: the tower's prompts, ``[num_tokens, width]`` (``SoftPrompt``) or ``[layers, num_tokens, width]``
            (``DeepSoftPrompt``). lm_prompts: the language model's rows ``[lm_tokens, D]``, or None.

    Raises:
        UnsupportedModelError: a vision tower that is neither (Idefics3's).
    """

    method = "vlm_vpt"
    prompt_module_names = ("prompts", "lm_prompts")

    def __init__(self, backbone: nn.Module, config: VLMVisionPromptConfig, name: str | None = None, **context: Any) -> None:
        super().__init__(backbone, name)
        self.config = config
        self.tower = prompt_tower(backbone, self.backbone_name, self.method)
        generator = torch.Generator().manual_seed(config.seed)
        width, init = self.tower.width, {"init": "normal", "std": config.init_std, "generator": generator}
        if config.deep:
            self.prompts = DeepSoftPrompt(self.tower.depth, config.num_tokens, width, **init)
        else:
            self.prompts = SoftPrompt(config.num_tokens, width, **init)
        self.lm_prompts = SoftPrompt(config.lm_tokens, self.dim, **init) if config.lm_tokens else None
        for module in self.prompt_modules().values():
            module.to(trainable_dtype(backbone))
        self.freeze_backbone()

    @property
    def num_prompt_tokens(self) -> int:
        return self.config.lm_tokens

    def shallow_prompt(self, batch_size: int) -> torch.Tensor:
        if self.lm_prompts is None:
            return self.embedding.weight.new_zeros(batch_size, 0, self.dim)
        return self.lm_prompts(batch_size)

    def prompted_backbone(self) -> contextlib.AbstractContextManager:
        """Within it, the vision tower runs with the prompts (:func:`tower_prompts`): before every layer with
        ``deep``, else before the first."""
        weight = self.prompts.weight if self.config.deep else self.prompts.weight.unsqueeze(0)
        return tower_prompts(self.tower, list(weight))

    def prompt_config(self) -> dict[str, Any]:
        return {
            **super().prompt_config(),
            "vision_tokens": self.config.num_tokens,
            "deep": self.config.deep,
            "vision_width": self.tower.width,
        }


def prompt_tower(backbone: nn.Module, name: str, method: str) -> Any:
    """The vision tower of ``backbone`` for ``method``: a :class:`PackedTower` (Qwen2-VL, Qwen2.5-VL), else the tower
    seen as tokens (:func:`vpt.backbones.token_backbone`).

    Raises:
        UnsupportedModelError: a tower that is neither (Idefics3's: :data:`REFUSED`), naming the methods that work
            without one.
    """
    from vpt.backbones import token_backbone

    tower = next((getattr(backbone.model, a) for a in ("vision_tower", "visual", "vision_model") if hasattr(backbone.model, a)), None)
    if type(tower).__name__ in PACKED:
        return PackedTower(tower)
    try:
        if not isinstance(tower, nn.Module):
            raise UnsupportedModelError("no vision tower")
        return token_backbone(tower, f"{name} vision tower")
    except UnsupportedModelError:
        raise UnsupportedModelError(
            f"the vision tower of {type(backbone).__name__} ({type(tower).__name__}) is not a ViT that VPT prompts can "
            f"extend{REFUSED.get(type(tower).__name__, '')}; {method} supports the CLIP and SigLIP towers of LLaVA, "
            f"LLaVA-OneVision and PaliGemma and the packed towers of Qwen2-VL and Qwen2.5-VL. Use vlm_prompt_tuning or "
            f"vlm_prefix (prompts in the language model)"
        ) from None


@contextlib.contextmanager
def tower_prompts(tower: Any, prompts: Sequence[torch.Tensor]) -> Iterator[None]:
    """Within it, the vision ``tower`` (a :func:`vpt.backbones.token_backbone` view, or a :class:`PackedTower`) runs
    with prompt tokens: ``prompts[i]`` (``[n, width]``, the same ``n`` for all) go in before layer ``i`` (layer 0
    inserts them, every later one replaces the previous layer's prompt outputs) and are taken out of every hidden
    state the tower returns. Layers from ``len(prompts)`` on run the prompt rows the previous layer gave. Where they
    go: :func:`token_prompt_hooks` (a ViT's sequence), :func:`packed_prompt_hooks` (Qwen's packed one)."""
    hooks = packed_prompt_hooks if isinstance(tower, PackedTower) else token_prompt_hooks
    handles = hooks(tower, prompts)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def with_hidden_states(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    """A forward pre-hook's result: the module's call with its hidden states (first argument, or ``hidden_states=``)
    replaced by ``x``."""
    return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})


def token_prompt_hooks(tower: Any, prompts: Sequence[torch.Tensor]) -> list[RemovableHandle]:
    """:func:`tower_prompts` on a ViT's ``[B, tokens, width]`` sequence: pre-hooks on its layers put ``prompts[i]``
    in after the prefix tokens, and a hook on the tower takes them out of every hidden state it returns."""
    pre, n = tower.num_prefix_tokens, prompts[0].shape[0]

    def insert(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            x = args[0] if args else kwargs["hidden_states"]
            rest = x[:, pre:] if index == 0 else x[:, pre + n :]
            return with_hidden_states(args, kwargs, torch.cat([x[:, :pre], prompts[index].to(x.dtype).expand(x.shape[0], -1, -1), rest], dim=1))

        return hook

    def strip(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :pre], x[:, pre + n :]], dim=1)

    handles = [tower.block(i).register_forward_pre_hook(insert(i), with_kwargs=True) for i in range(len(prompts))]
    handles.append(tower.model.register_forward_hook(taking_out(strip, dim=1), with_kwargs=True))
    return handles


def taking_out(strip: Callable[[torch.Tensor], torch.Tensor], dim: int) -> Callable[..., Any]:
    """A forward hook on a tower that applies ``strip`` (prompt rows out) to its ``last_hidden_state`` and to each of
    its ``hidden_states`` as long as that (the sequence being ``dim``): the embeddings' output has no prompts yet,
    and states the model does not read may be None."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        prompted = output.last_hidden_state.shape[dim]
        output.last_hidden_state = strip(output.last_hidden_state)
        if output.hidden_states is not None:
            output.hidden_states = tuple(strip(h) if h is not None and h.shape[dim] == prompted else h for h in output.hidden_states)
        return output

    return hook


def packed_prompt_hooks(tower: PackedTower, prompts: Sequence[torch.Tensor]) -> list[RemovableHandle]:
    """:func:`tower_prompts` on a :class:`PackedTower`, all through the tower's own seams.

    Each image (row of ``grid_thw``) gets its own copy of the ``n`` prompt rows. Between blocks they sit after all
    patches, ``[patches, image 0's prompts, image 1's, ...]`` (all of a block but its attention works row by row),
    put there by pre-hooks on the blocks. A pre-hook on each block's attention lays its input out anew: each segment
    of the ``cu_seqlens`` the tower passes (an image; on Qwen2.5-VL's windowed blocks a window of one) preceded by
    its image's prompt rows, ``cu_seqlens`` grown by ``n`` a segment, the prompt rows' rotary embedding the identity
    (cos 1, sin 0: prompts have no position). A hook after the attention puts the patches' outputs back in place and
    gives each prompt row the mean of its copies' outputs: one copy under full attention, one a window under
    windowed attention (VPT's own Swin implementation averages a prompt's attention outputs over the windows). A
    pre-hook on the merger and a hook on the tower take the prompt rows out again: the merger folds the patches
    alone, and the tower returns hidden states without prompts.
    """
    n = prompts[0].shape[0]
    run: dict[str, Any] = {}  # the current tower call: its patch count, image ends, layouts of its cu_seqlens

    def start(module: nn.Module, args: tuple, kwargs: dict) -> None:
        grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        sizes = grid.prod(-1)
        run.update(patches=int(sizes.sum()), ends=sizes.cumsum(0), images=len(sizes), layouts=[])

    def insert(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            x = args[0] if args else kwargs["hidden_states"]
            rows = prompts[index].to(x.dtype).repeat(run["images"], 1)
            return with_hidden_states(args, kwargs, torch.cat([x[: run["patches"]], rows]))

        return hook

    def layout(cu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(order, grown, copies)`` of segments ``cu``: the rows of the blocks' sequence the attention's input
        takes, its ``cu_seqlens``, and how often each row occurs in it. Computed once a tower call per ``cu``."""
        for seen, value in run["layouts"]:
            if seen is cu:
                return value
        patches = run["patches"]
        rows = torch.arange(patches + run["images"] * n, device=cu.device)
        bounds = cu.tolist()
        images = torch.searchsorted(run["ends"].to(cu.device), cu[:-1].to(run["ends"].dtype), right=True).tolist()
        order = torch.cat([
            torch.cat([rows[patches + k * n : patches + (k + 1) * n], rows[a:b]]) for k, a, b in zip(images, bounds[:-1], bounds[1:])
        ])
        grown = torch.nn.functional.pad((cu[1:] - cu[:-1] + n).cumsum(0, dtype=cu.dtype), (1, 0))
        value = (order, grown, torch.bincount(order, minlength=len(rows)))
        run["layouts"].append((cu, value))
        return value

    def join(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        # transformers 5.25's Qwen2-VL / Qwen2.5-VL blocks pass cu_seqlens and position_embeddings by keyword
        x = args[0] if args else kwargs["hidden_states"]
        order, grown, _ = run["current"] = layout(kwargs["cu_seqlens"])
        cos, sin = kwargs["position_embeddings"]
        extra = x.shape[0] - cos.shape[0]
        kwargs = {
            **kwargs, "cu_seqlens": grown,
            "position_embeddings": (torch.cat([cos, cos.new_ones(extra, cos.shape[1])])[order], torch.cat([sin, sin.new_zeros(extra, sin.shape[1])])[order]),
        }
        if kwargs.get("max_seqlen") is not None:  # flash attention's
            kwargs["max_seqlen"] = int((grown[1:] - grown[:-1]).max())
        return with_hidden_states(args, kwargs, x[order])

    def average(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        order, _, copies = run["current"]
        wide = torch.promote_types(output.dtype, torch.float32)  # a 16-bit tower sums a prompt's windows in float32
        summed = output.new_zeros(len(copies), output.shape[1], dtype=wide).index_add(0, order, output.to(wide))
        return (summed / copies.to(wide)[:, None]).to(output.dtype)

    def patches_only(x: torch.Tensor) -> torch.Tensor:
        return x[: run["patches"]]

    handles = [tower.model.register_forward_pre_hook(start, with_kwargs=True)]
    handles += [tower.block(i).register_forward_pre_hook(insert(i), with_kwargs=True) for i in range(len(prompts))]
    for i in range(tower.depth):
        handles.append(tower.block(i).attn.register_forward_pre_hook(join, with_kwargs=True))
        handles.append(tower.block(i).attn.register_forward_hook(average, with_kwargs=True))
    handles.append(tower.model.merger.register_forward_pre_hook(lambda module, args: (patches_only(args[0]), *args[1:])))
    handles.append(tower.model.register_forward_hook(taking_out(patches_only, dim=0), with_kwargs=True))
    return handles


register_method(
    "vlm_vpt", VLMVisionPromptConfig, VLMVisionPromptModel, kind="text",
    summary="VPT-shallow / VPT-deep in the vision tower of LLaVA (-OneVision), PaliGemma, Qwen2-VL or Qwen2.5-VL, with optional prompt rows in its language model",
)
