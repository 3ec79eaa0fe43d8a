"""Serving vision prompts: rebuild a ready model from a prompt folder, serve many prompt folders on one frozen backbone
in mixed batches, and merge single-task folders into a prompt bank.

- :func:`load_prompted` rebuilds the prompted model a folder was trained as, from the folder alone: prompt files
  record the method's full config (``method_config``), the class names, the ``model`` section the backbone was built
  from and, for a randomly initialised backbone, the seed it was built with (``backbone_seed``), so the rebuilt
  backbone has the fingerprint the prompts were trained on. ``vpt train`` records all of it; from Python,
  ``save_prompts`` records the method config and :func:`record_backbone` the rest.
- :class:`VisionBackend` is the vision side of :mod:`promptcore.serving` (registered as ``vision`` in
  :data:`promptcore.serving.BACKENDS`): it opens prompt folders against the served backbone and runs one batch whose
  rows use different prompts in as few forwards as the methods allow (:data:`ROUTES`): token prompts of any length,
  shallow or deep, share one pass through the blocks (:func:`vpt.mixed.run_token_prompts`); pixel prompts and
  linear probes share one (:func:`vpt.mixed.run_pooled`); the CLIP methods share one (:mod:`vpt.clip.serving`).
  Anything else runs each prompt's rows through its ordinary model: a batch is split, never refused.
- :func:`merge_prompts` (``vpt merge-prompts OUT FOLDER...``) stacks single-task folders of one method and sizes into
  one prompt bank for offline mixed batches (``task_ids``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from promptcore import PromptedModel, PromptFileError, read_prompt_config, wrap
from promptcore.cli import Command, register_command
from promptcore.config import load_config
from promptcore.errors import UserError
from promptcore.files import load_prompt_files, save_prompt_files
from promptcore.fingerprint import FINGERPRINT_KEY, backbone_fingerprint
from promptcore.methods import METHODS, method_key, recorded_method_config
from promptcore.plugins import load_plugins
from promptcore.registry import Registry
from promptcore.serving import (
    BACKENDS,
    Classification,
    GenerationStep,
    LimitError,
    Limits,
    PromptInfo,
    Request,
    check_prompt_weights,
)

from .backbones import backbone_name, create_model
from .config import BackboneConfig
from .data import (
    UNREADABLE,
    VisionDataConfig,
    build_transform,
    resolve_image_config,
    to_rgb,
    with_data_overrides,
    with_recorded_preprocessing,
)
from .fast_deep import fast_unsupported
from .linear_probe import LinearProbe
from .mixed import run_pooled, run_token_prompts
from .model import VisualPromptModel
from .pixel import PixelPromptModel

DEFAULT_TOP_K = 5


# ----- what a prompt folder records, and rebuilding a model from it ----------------------------------------------
def record_backbone(model: PromptedModel, backbone: BackboneConfig, seed: int | None = None) -> None:
    """Makes every prompt folder ``model`` saves from now on record the ``model`` section its backbone was built from
    and, when that backbone has random weights, the ``seed`` torch was seeded with just before
    :func:`vpt.create_model` built it, so :func:`load_prompted` can rebuild the same backbone (``vpt train`` does
    this itself)."""
    random = backbone.random_weights and seed is not None
    model.record_in_prompt_files(model=dataclasses.asdict(backbone), backbone_seed=seed if random else None)


def method_config_of(meta: dict[str, Any], folder: str | os.PathLike) -> Any:
    """The method config a prompt folder's ``prompt_config.json`` (``meta``) records, validated
    (:func:`promptcore.methods.recorded_method_config`), with the class names the folder records for CLIP models."""
    names = meta.get("class_names")
    recorded = meta.get("method_config")
    if names and isinstance(recorded, dict) and "class_names" in _config_fields(str(meta.get("method"))):
        meta = {**meta, "method_config": {**recorded, "class_names": names}}  # a CLIP model moved to other classes
    return recorded_method_config(
        meta, "vision", f"prompt folder {folder}",
        f"build the model from its run config instead (vpt.wrap(backbone, config) then model.load_prompts(folder), or "
        f"vpt eval / vpt predict -c CONFIG --prompts {folder}), or train it again",
    )


def _config_fields(method: str) -> set[str]:
    key = method_key("vision", method)
    if key not in METHODS:
        load_plugins()
    return {f.name for f in dataclasses.fields(METHODS.get(key).config_class)} if key in METHODS else set()


def build_backbone(backbone: BackboneConfig, seed: int | None = None) -> nn.Module:
    """:func:`vpt.create_model` of ``backbone``, after seeding torch (and python, numpy) with ``seed`` when the
    backbone gets random weights, as ``vpt train`` built it."""
    if seed is not None and backbone.random_weights:
        from promptcore.trainer import seed_everything

        seed_everything(seed)
    return create_model(backbone)


def backbone_of_record(meta: dict[str, Any], folder: str | os.PathLike) -> nn.Module:
    """The backbone a prompt folder's config (``meta``) records (``model`` and ``backbone_seed``).

    Raises:
        PromptFileError: the folder records no model section.
    """
    section = meta.get("model")
    if not isinstance(section, dict):
        raise PromptFileError(
            f"prompt folder {folder} records no model section (saved from Python without vpt.serving.record_backbone, "
            f"or by an older version); pass the backbone it was trained on (backbone=...)"
        )
    return build_backbone(load_config(BackboneConfig, section), meta.get("backbone_seed"))


def _build(backbone: nn.Module, config: Any, **context: Any) -> PromptedModel:
    """``wrap(backbone, config, **context)`` with the context keys the method's builder takes."""
    build = METHODS.get(method_key("vision", config.method)).build
    params = inspect.signature(build).parameters
    accepts_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return wrap(backbone, config, **{k: v for k, v in context.items() if v is not None and (accepts_all or k in params)})


def load_prompted(folder: str | os.PathLike, backbone: nn.Module | None = None, tokenizer: Any = None) -> PromptedModel:
    """The ready model (eval mode) a prompt folder was trained as, from the folder alone.

    Args:
        folder: a prompt folder (a run's ``best/`` or ``last/``, or ``save_prompts``'s folder).
        backbone: the frozen backbone to wrap; default: built from the ``model`` section (and seed) the folder
            records.
        tokenizer: the CLIP methods' tokenizer object (default: the one their config names).

    Raises:
        PromptFileError: a corrupt folder, one without ``method_config`` (or without a model section when
            ``backbone`` is None), or a backbone whose weights fingerprint differs from the folder's.
    """
    tensors, meta = load_prompt_files(folder)
    config = method_config_of(meta, folder)
    if backbone is None:
        backbone = backbone_of_record(meta, folder)
    check_prompt_weights(meta, backbone_fingerprint(backbone), folder, f"backbone {backbone_name(backbone)!r}")
    model = _build(backbone, config, tokenizer=tokenizer, name=meta.get("backbone"))
    model.check_prompt_config(meta, source=f"prompt folder {folder}")
    model.load_prompt_state_dict(tensors)
    return model.eval()


# ----- routes: which prompts share one forward -------------------------------------------------------------------
@dataclass(frozen=True)
class ServingRoute:
    """A family of prompts that share one forward in a mixed batch.

    Attributes:
        accepts: ``accepts(model)``: whether a loaded prompt's model takes this route.
        cache: ``cache(model) -> dict`` of tensors (or lists of tensors) computed once when the prompt is opened
            (CLIP class-text features, a token prompt's projected prompts), kept beside it on the CPU or device.
        run: ``run(pixel_values, entries) -> list of logits``: ``entries`` are ``(prompt, rows)`` pairs, one per
            distinct :class:`LoadedVisionPrompt` of the group, and the result one ``[len(rows), classes]`` tensor per
            entry.
    """

    accepts: Callable[[PromptedModel], bool]
    cache: Callable[[PromptedModel], dict[str, Any]]
    run: Callable[[torch.Tensor, list[tuple["LoadedVisionPrompt", list[int]]]], list[torch.Tensor]]


ROUTES: Registry[ServingRoute] = Registry("serving route")
"""Tried in registration order; a prompt no route accepts runs alone through its ordinary model (route ``model``)."""


def _token_route_accepts(model: PromptedModel) -> bool:
    return (
        isinstance(model, VisualPromptModel)
        and model.config.num_tasks == 1
        and fast_unsupported(model.tokens, model.tokens.depth) is None
    )


def _token_cache(model: VisualPromptModel) -> dict[str, torch.Tensor]:
    """A projected prompt's tokens, computed once; an unprojected prompt's tokens are a view of its weights, read
    at each batch (a kept copy would hold the prompt twice on the device)."""
    return {"tokens": model.prompt_tokens().detach()} if model.prompt_proj is not None else {}


def _prompt_tokens(prompt: "LoadedVisionPrompt") -> torch.Tensor:
    return prompt.cache["tokens"] if "tokens" in prompt.cache else prompt.model.prompt_tokens().detach()


def _run_tokens(pixel_values: torch.Tensor, entries: list[tuple["LoadedVisionPrompt", list[int]]]) -> list[torch.Tensor]:
    pairs = [(p.model, rows) for p, rows in entries]
    return run_token_prompts(entries[0][0].model.tokens, pixel_values, pairs, [_prompt_tokens(p)[0] for p, _ in entries])


def _run_pooled(pixel_values: torch.Tensor, entries: list[tuple["LoadedVisionPrompt", list[int]]]) -> list[torch.Tensor]:
    return run_pooled(entries[0][0].model.backbone, pixel_values, [(p.model, rows) for p, rows in entries])


@torch.no_grad()
def _run_alone(pixel_values: torch.Tensor, entries: list[tuple["LoadedVisionPrompt", list[int]]]) -> list[torch.Tensor]:
    return [p.model.forward_batch({"pixel_values": pixel_values[rows]}) for p, rows in entries]


ROUTES.add("tokens", ServingRoute(
    accepts=_token_route_accepts,
    cache=_token_cache,
    run=_run_tokens,
))
ROUTES.add("pooled", ServingRoute(
    accepts=lambda model: isinstance(model, LinearProbe) or (isinstance(model, PixelPromptModel) and model.config.num_tasks == 1),
    cache=lambda model: {},
    run=_run_pooled,
))
ALONE = ServingRoute(accepts=lambda model: True, cache=lambda model: {}, run=_run_alone)


def route_of(model: PromptedModel) -> str:
    """The name of the first route of :data:`ROUTES` that accepts ``model``, else ``model`` (alone)."""
    for name, route in ROUTES.items():
        if route.accepts(model):
            return name
    return "model"


def _route(name: str) -> ServingRoute:
    return ALONE if name == "model" else ROUTES.get(name)


# ----- the backend -----------------------------------------------------------------------------------------------
def _move(value: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, dtype if dtype is not None and value.is_floating_point() else value.dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device, dtype) for k, v in value.items()}
    return value


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


def _move_prompt_side(model: PromptedModel, device: torch.device, dtype: torch.dtype | None = None) -> None:
    """Moves (and casts) everything of ``model`` but its frozen backbone: prompt modules, heads, derived buffers."""
    frozen = {id(p) for p in model.backbone.parameters()}
    for child in model.children():
        if child is model.backbone or any(id(p) in frozen for p in child.parameters()):
            continue
        child.to(device=device, dtype=dtype) if dtype is not None else child.to(device)
    for key, buffer in model._buffers.items():
        if buffer is not None:
            model._buffers[key] = _move(buffer, device, dtype)


@dataclass
class LoadedVisionPrompt:
    """One prompt folder opened by :class:`VisionBackend` (a :class:`promptcore.serving.LoadedPrompt`).

    Attributes:
        info: what the server lists.
        model: the prompt's ordinary model, built on the served backbone (which it shares, never copies).
        route: the :data:`ROUTES` entry its rows run on (``model``: alone).
        cache: what the route computed once at load (class-text features, prompt tokens).
        transform: PIL image -> pixel tensor, with the preprocessing the prompt was trained with.
    """

    info: PromptInfo
    model: PromptedModel
    route: str
    cache: dict[str, Any]
    transform: Callable[[Image.Image], torch.Tensor] = field(repr=False)

    @property
    def classes(self) -> list[str]:
        return self.info.classes or []

    def to(self, device: torch.device) -> "LoadedVisionPrompt":
        """Moves the prompt's tensors (prompts, head, cached features) to ``device``; the backbone stays."""
        _move_prompt_side(self.model, torch.device(device))
        self.cache = _move(self.cache, torch.device(device))
        return self


class VisionBackend:
    """One frozen image backbone served with many vision prompts (:class:`promptcore.serving.ServingBackend`).

    Args:
        backbone: the frozen model (timm, open_clip, transformers, an asset), with its weights.
        device: where batches run (the backbone is moved there).
        limits: what one request may ask.
        dtype: the backbone's dtype for serving (default: as it is); prompts and heads run in at least float32.
    """

    kind = "vision"

    def __init__(
        self,
        backbone: nn.Module,
        device: torch.device | str = "cpu",
        limits: Limits = Limits(),
        dtype: torch.dtype | None = None,
    ) -> None:
        self.device = torch.device(device)
        # Before any cast: prompt files record the fingerprint of the weights as trained on (a bfloat16 copy differs).
        self.fingerprint = backbone_fingerprint(backbone)
        self.backbone = backbone.to(self.device, dtype) if dtype is not None else backbone.to(self.device)
        self.backbone.eval().requires_grad_(False)
        self.name = backbone_name(self.backbone)
        self.limits = limits
        params = list(self.backbone.parameters()) + list(self.backbone.buffers())
        self.backbone_nbytes = sum(t.numel() * t.element_size() for t in params)
        self.dtype = next((p.dtype for p in self.backbone.parameters() if p.is_floating_point()), torch.float32)
        self.prompt_dtype = torch.promote_types(self.dtype, torch.float32)
        self.last_routes: list[tuple[str, int]] = []
        self._tokenizers: dict[Any, Any] = {}

    # ----- opening prompts --------------------------------------------------------------------------------------
    def open_prompt(self, folder: Path, name: str) -> LoadedVisionPrompt:
        """Opens prompt folder ``folder`` as ``name`` on the CPU (see :class:`promptcore.serving.ServingBackend`)."""
        folder = Path(folder)
        tensors, meta = load_prompt_files(folder)
        check_prompt_weights(meta, self.fingerprint, folder, f"the served backbone {self.name!r}")
        if int(meta.get("num_tasks") or 1) > 1:
            raise UserError(
                f"prompt folder {folder} is a prompt bank of {meta['num_tasks']} tasks; serve the single-task folders "
                f"it was merged from (each gets its own name, and requests for them share batches anyway)"
            )
        config = method_config_of(meta, folder)
        tokenizer_key = getattr(config, "tokenizer", None)
        model = _build(self.backbone, config, tokenizer=self._tokenizers.get(tokenizer_key), name=meta.get("backbone"))
        if hasattr(model, "tokenizer"):
            self._tokenizers.setdefault(tokenizer_key, model.tokenizer)
        model.check_prompt_config(meta, source=f"prompt folder {folder}")
        model.load_prompt_state_dict(tensors)
        model.eval()
        _move_prompt_side(model, self.device, self.prompt_dtype)
        route = route_of(model)
        with torch.no_grad():
            cache = _route(route).cache(model)
        return LoadedVisionPrompt(
            info=PromptInfo(
                name=name,
                method=str(meta["method"]),
                task="image_classification",
                operations=("classify",),
                classes=self._class_names(model, meta),
                num_parameters=sum(t.numel() for t in tensors.values()),
                nbytes=_nbytes(tensors) + _nbytes(cache),
                meta=meta,
            ),
            model=model,
            route=route,
            cache=cache,
            transform=self._transform(meta, folder),
        ).to(torch.device("cpu"))

    @staticmethod
    def _class_names(model: PromptedModel, meta: dict[str, Any]) -> list[str]:
        names = meta.get("class_names") or getattr(getattr(model, "config", None), "class_names", None)
        if names:
            return list(names)
        return [str(i) for i in range(int(meta.get("num_classes") or 0))]

    def _transform(self, meta: dict[str, Any], folder: Path) -> Callable[[Image.Image], torch.Tensor]:
        data = with_recorded_preprocessing(VisionDataConfig(), meta.get("preprocessing") or {}, str(folder))
        return build_transform(with_data_overrides(resolve_image_config(self.backbone, data.image_size), data))

    # ----- requests ---------------------------------------------------------------------------------------------
    def prepare(self, prompt: LoadedVisionPrompt, operation: str, payload: Any, params: dict[str, Any]) -> Request:
        """Decodes one image (encoded bytes or a PIL image) and preprocesses it as ``prompt`` was trained.

        Raises:
            promptcore.errors.UserError: another operation than ``classify``, a malformed image (field ``image``),
                a bad ``top_k``.
            promptcore.serving.LimitError: an image over ``limits.max_image_pixels``, ``top_k`` over
                ``limits.max_top_k``.
        """
        if operation != "classify":
            raise UserError(f"operation: vision prompts classify images; {operation!r} is not offered (use 'classify')")
        top_k = params.get("top_k", min(DEFAULT_TOP_K, self.limits.max_top_k))
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UserError(f"top_k: must be a positive integer, got {top_k!r}")
        if top_k > self.limits.max_top_k:
            raise LimitError(f"top_k: {top_k} is over the limit of {self.limits.max_top_k}; ask for fewer labels")
        image = self.decode_image(payload)
        return Request(prompt=prompt, operation="classify", input=prompt.transform(image), params={"top_k": top_k})

    def decode_image(self, payload: Any) -> Image.Image:
        """An RGB image from encoded bytes or a PIL image, within ``limits.max_image_pixels``."""
        if isinstance(payload, (bytes, bytearray, memoryview)):
            try:
                image = Image.open(io.BytesIO(bytes(payload)))
            except Image.DecompressionBombError as e:
                raise LimitError(f"image: {e}; send a smaller image") from None
            except (UnidentifiedImageError, *UNREADABLE) as e:
                raise UserError(f"image: not an image file PIL can read ({type(e).__name__}); send PNG, JPEG or another image format") from None
        elif isinstance(payload, Image.Image):
            image = payload
        else:
            raise UserError(f"image: expected encoded image bytes or a PIL image, got {type(payload).__name__}")
        width, height = image.size
        if width * height > self.limits.max_image_pixels:
            raise LimitError(
                f"image: {width}x{height} = {width * height} pixels is over the limit of {self.limits.max_image_pixels}; "
                f"send a smaller image"
            )
        try:
            image.load()
            return to_rgb(image)
        except UNREADABLE as e:
            raise UserError(f"image: the image data cannot be decoded ({type(e).__name__}: {e}); the file is truncated or corrupt") from None

    # ----- batches ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, requests: list[Request]) -> list[torch.Tensor]:
        """Each request's logits ``[classes of its prompt]`` (on the CPU) for one mixed batch: rows are grouped by
        route and input size, and each group runs in one forward (:data:`ROUTES`)."""
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for i, request in enumerate(requests):
            if request.operation != "classify" or not isinstance(request.prompt, LoadedVisionPrompt):
                raise UserError(f"request {i}: the vision backend classifies with its own loaded prompts (operation 'classify')")
            groups.setdefault((request.prompt.route, tuple(request.input.shape)), []).append(i)
        results: list[torch.Tensor | None] = [None] * len(requests)
        self.last_routes = []
        for (route, _), indices in groups.items():
            pixels = torch.stack([requests[i].input for i in indices]).to(self.device, self.dtype)
            entries: dict[int, tuple[LoadedVisionPrompt, list[int]]] = {}
            for row, i in enumerate(indices):
                entries.setdefault(id(requests[i].prompt), (requests[i].prompt, []))[1].append(row)
            pairs = list(entries.values())
            for (_, rows), logits in zip(pairs, _route(route).run(pixels, pairs)):
                for row, value in zip(rows, logits.cpu()):
                    results[indices[row]] = value
            self.last_routes.append((route, len(indices)))
        return results

    def classify(self, requests: list[Request]) -> list[Classification]:
        """One mixed batch of ``classify`` requests (:meth:`logits`): each row gets its prompt's ``top_k`` classes with
        their probabilities."""
        out = []
        for request, logits in zip(requests, self.logits(requests)):
            out.append(self._top(request.prompt, logits.float().softmax(-1), request.params.get("top_k", DEFAULT_TOP_K)))
        return out

    @staticmethod
    def _top(prompt: LoadedVisionPrompt, probs: torch.Tensor, top_k: int) -> Classification:
        top = probs.topk(min(top_k, probs.numel()))
        names = prompt.classes
        indices = top.indices.tolist()
        return Classification(labels=[names[i] if i < len(names) else str(i) for i in indices], scores=top.values.tolist(), indices=indices)

    def generate(self, requests: list[Request]) -> Iterator[list[GenerationStep | None]]:
        """Vision prompts classify; there is nothing to generate."""
        raise UserError("operation: vision prompts classify images and generate no text; use 'classify'")


def build_vision_backend(
    model_section: dict[str, Any] | BackboneConfig | None,
    prompt_folders: Sequence[str | os.PathLike],
    device: torch.device | str = "cpu",
    limits: Limits = Limits(),
    dtype: torch.dtype | None = None,
) -> VisionBackend:
    """The :data:`promptcore.serving.BACKENDS` builder of ``vision``: the backbone of ``model_section`` (a run config's
    ``model:`` mapping), or, when that is None, the one the first prompt folder records (with its seed).

    Raises:
        promptcore.errors.UserError: no model section and no prompt folder to read one from.
    """
    folders = [Path(f) for f in prompt_folders]
    first = read_prompt_config(folders[0]) if folders else {}
    if model_section is None:
        if not folders:
            raise UserError("model: give the backbone's model section, or prompt folders that record one")
        return VisionBackend(backbone_of_record(first, folders[0]), device, limits, dtype)
    section = model_section if isinstance(model_section, BackboneConfig) else load_config(BackboneConfig, dict(model_section))
    # A random backbone is the one its prompts were trained on only when built with their seed.
    seed = first.get("backbone_seed") if first.get("model") == dataclasses.asdict(section) else None
    return VisionBackend(build_backbone(section, seed), device, limits, dtype)


BACKENDS.add("vision", build_vision_backend)


# ----- prompt banks from single-task folders ---------------------------------------------------------------------
BANK_METHODS = ("vpt_shallow", "vpt_deep", "vfpt", "pixel_pad", "pixel_fixed_patch", "pixel_random_patch")
"""Methods whose models hold a prompt bank (``num_tasks``): :func:`merge_prompts` merges their folders."""

# What folders merged into one bank must share: the sizes, the weights and the preprocessing (prompt_config.json), and
# the method config but for what only training reads.
_BANK_KEYS = (
    "method", "backbone", "dim", "num_tokens", "num_layers", "num_classes", "head", "num_tasks", "projection",
    "backbone_depth", "image_size", "prompt_size", "channels", "fourier_share", "fourier_dims", "fourier_location",
    FINGERPRINT_KEY, "preprocessing",
)
_TRAINING_ONLY = ("dropout", "init", "init_scale", "fast", "class_names")
# Keys of prompt_config.json that are the file's own or a training run's, not the bank's.
_FILE_KEYS = ("toolkit", "toolkit_version", "format_version", "tensors", "step", "epoch", "metric", "value")


def _bank_signature(meta: dict[str, Any]) -> dict[str, Any]:
    method_config = {k: v for k, v in (meta.get("method_config") or {}).items() if k not in _TRAINING_ONLY}
    return {**{k: meta.get(k) for k in _BANK_KEYS}, "method_config": method_config}


def merge_prompts(output: str | os.PathLike, folders: Sequence[str | os.PathLike]) -> Path:
    """Merges single-task prompt folders of one method, backbone and sizes into one prompt bank folder: task ``t`` of
    the bank is ``folders[t]`` (its prompts and its head), so ``model(images, task_ids)`` gives each row what its
    folder gives alone.

    Raises:
        promptcore.errors.UserError: fewer than two folders, a method without banks, folders that differ in
            method, sizes, weights fingerprint, class count or preprocessing, or a bank among them.
    """
    if len(folders) < 2:
        raise UserError(f"merge-prompts: give at least two prompt folders to merge, got {len(folders)}")
    loaded = [load_prompt_files(f) for f in folders]
    metas = [meta for _, meta in loaded]
    first = metas[0]
    method = first.get("method")
    if method not in BANK_METHODS:
        raise UserError(
            f"merge-prompts: method {method!r} has no prompt bank (banks: {', '.join(BANK_METHODS)}); serve the folders "
            f"together instead (vpt.serving.VisionBackend mixes them in one batch)"
        )
    signature = _bank_signature(first)
    for folder, meta in zip(folders[1:], metas[1:]):
        if int(meta.get("num_tasks") or 1) != 1:
            raise UserError(f"merge-prompts: {folder} is already a bank of {meta['num_tasks']} tasks; merge single-task folders")
        theirs = _bank_signature(meta)
        differ = [k for k in signature if signature[k] != theirs[k]]
        if differ:
            raise UserError(
                f"merge-prompts: {folder} differs from {folders[0]} in {', '.join(differ)} "
                f"({'; '.join(f'{k}: {signature[k]!r} vs {theirs[k]!r}' for k in differ[:3])}); a bank holds prompts "
                f"of one method, backbone and size"
            )
    if int(first.get("num_tasks") or 1) != 1:
        raise UserError(f"merge-prompts: {folders[0]} is already a bank of {first['num_tasks']} tasks; merge single-task folders")
    tensors: dict[str, torch.Tensor] = {}
    for key in loaded[0][0]:
        parts = [t[key] for t, _ in loaded]
        if key.startswith("prompt_proj."):
            if any(not torch.equal(parts[0], p) for p in parts[1:]):
                raise UserError(
                    "merge-prompts: the folders' prompt projections (projection) differ; a bank shares one projection, "
                    "so only folders trained without one (or with the same one) merge"
                )
            tensors[key] = parts[0]
        elif key == "prompts.weight" and method in ("vpt_shallow", "vpt_deep", "vfpt"):
            tensors[key] = torch.stack(parts)  # one prompt set per task: [tasks, (layers,) tokens, width]
        else:
            tensors[key] = torch.cat(parts)  # already [1, ...] per task: the heads, pixel prompts
    config = {k: v for k, v in first.items() if k not in _FILE_KEYS}
    config["num_tasks"] = len(folders)
    if isinstance(config.get("method_config"), dict):
        config["method_config"] = {**config["method_config"], "num_tasks": len(folders)}
    names = [meta.get("class_names") for meta in metas]
    same_names = all(n == names[0] for n in names)
    if not same_names and first.get("head") == "zeroshot":
        raise UserError("merge-prompts: the folders' zeroshot heads embed different class names; a bank holds one set")
    config["class_names"] = names[0] if same_names else None
    if isinstance(config.get("method_config"), dict) and "class_names" in config["method_config"]:
        config["method_config"]["class_names"] = config["class_names"]
    config["tasks"] = [{"folder": str(f), "class_names": n} for f, n in zip(folders, names)]
    return save_prompt_files(output, tensors, config)


def _merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", metavar="OUT", help="the bank's prompt folder (written atomically)")
    p.add_argument("folders", metavar="FOLDER", nargs="+", help="single-task prompt folders, task 0 first")


def _merge(args: argparse.Namespace) -> int:
    out = merge_prompts(args.output, args.folders)
    print(f"merge-prompts: a bank of {len(args.folders)} tasks written to {out} (task t = the t-th folder)", file=sys.stderr)
    return 0


register_command(Command(
    prog="vpt", name="merge-prompts", help="merge single-task prompt folders into one prompt bank (task t = folder t)",
    configure=_merge_arguments, run=_merge,
))


__all__ = [
    "BANK_METHODS",
    "LoadedVisionPrompt",
    "ROUTES",
    "ServingRoute",
    "VisionBackend",
    "backbone_of_record",
    "build_backbone",
    "build_vision_backend",
    "load_prompted",
    "merge_prompts",
    "method_config_of",
    "record_backbone",
    "route_of",
]
