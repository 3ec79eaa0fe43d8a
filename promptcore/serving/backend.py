"""What a package gives the prompt server: one frozen backbone, and how to run many prompts on it in one batch.

The server (:mod:`promptcore.serving`) knows nothing of images, tokens or methods. A package (``vpt``, ``textpt``)
registers a :class:`ServingBackend` builder per kind in :data:`BACKENDS`; the backend

- opens prompt folders for its backbone (:meth:`ServingBackend.open_prompt`): checks the file against the served
  weights (fingerprint, method, sizes) and builds on the CPU what inference needs (the head, a CLIP method's
  class-text features), returning a :class:`LoadedPrompt`;
- turns one request's raw input into a :class:`Request` before it is queued (:meth:`ServingBackend.prepare`), so a
  malformed image or an over-long text fails that request alone, with a :class:`promptcore.errors.UserError`;
- runs one mixed batch (:meth:`ServingBackend.classify`, :meth:`ServingBackend.generate`): rows of one batch use
  different, separately trained prompts; the backend groups them into as few forwards as the methods allow and
  never refuses a request because of the mix. Every row's output equals what its prompt gives alone.

The server owns naming, the device tier (it calls :meth:`LoadedPrompt.to` to move prompts between the CPU and the
device, least recently used first), batching, queues, HTTP and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Protocol, runtime_checkable

import torch

from ..errors import UserError
from ..registry import Registry

OPERATIONS: tuple[str, ...] = ("classify", "generate")
"""What a request asks of a prompt: class scores (images, text classifiers, label scoring) or generated text."""


@dataclass
class PromptInfo:
    """What the server lists about a loaded prompt (``GET /v1/models``).

    Attributes:
        name: the name requests use (the server's, not the file's).
        method: the prompt method (``vpt_deep``, ``coop``, ``prompt_tuning`` ...).
        task: what the prompt does (``image_classification``, ``text_classification``, ``generation``).
        operations: which of :data:`OPERATIONS` it answers.
        classes: class names, best known (None for generation).
        num_parameters: trained values in the file (prompts and head).
        nbytes: bytes its tensors take in memory, cached class features included.
        meta: the folder's ``prompt_config.json``.
    """

    name: str
    method: str
    task: str
    operations: tuple[str, ...]
    classes: list[str] | None
    num_parameters: int
    nbytes: int
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LoadedPrompt(Protocol):
    """One prompt folder opened for a backend: its tensors (CPU or device) and what the backend needs to run it."""

    info: PromptInfo

    def to(self, device: torch.device) -> "LoadedPrompt":
        """Moves every tensor of the prompt to ``device`` (in place) and returns it."""
        ...


@dataclass
class Request:
    """One request, prepared: the prompt it names and its input as the backend runs it.

    Attributes:
        prompt: the loaded prompt (on the backend's device when the batch runs).
        operation: one of :data:`OPERATIONS`.
        input: the backend's form of the input (pixel tensor ``[3, H, W]``; token ids) made by
            :meth:`ServingBackend.prepare`.
        params: the operation's parameters: ``top_k`` (classify); ``max_tokens``, ``temperature``, ``top_p``,
            ``seed``, ``stop`` (generate).
        num_input_tokens: tokens of a text input (usage reports), 0 for images.
    """

    prompt: LoadedPrompt
    operation: str
    input: Any
    params: dict[str, Any] = field(default_factory=dict)
    num_input_tokens: int = 0


@dataclass
class Classification:
    """The answer to a ``classify`` request: the ``top_k`` classes, best first, with their probabilities."""

    labels: list[str]
    scores: list[float]
    indices: list[int]


@dataclass
class GenerationStep:
    """One decoding step of one ``generate`` request.

    Attributes:
        text: the text added since the previous step (may be empty while a multi-byte character is incomplete).
        token_ids: the tokens added since the previous step.
        finish_reason: None while the request goes on; ``stop`` (end of sequence or a stop string) or ``length``
            (``max_tokens`` reached) on its last step.
    """

    text: str
    token_ids: list[int]
    finish_reason: str | None = None


class ServingBackend(Protocol):
    """One frozen backbone served with many prompts (see the module docstring).

    Attributes:
        kind: ``vision``, ``text`` or ``vision-language``.
        name: the backbone's name as prompt files record it.
        fingerprint: the served weights' fingerprint (:mod:`promptcore.fingerprint`), or None.
        device: where batches run.
        backbone_nbytes: bytes of the frozen weights (memory reports).
        limits: what one request may ask (:class:`Limits`).
    """

    kind: ClassVar[str]
    name: str
    fingerprint: str | None
    device: torch.device
    backbone_nbytes: int
    limits: "Limits"

    def open_prompt(self, folder: Path, name: str) -> LoadedPrompt:
        """Opens prompt folder ``folder`` under ``name``, on the CPU.

        Raises:
            promptcore.PromptFileError: the folder is missing, corrupt, or made for other weights (fingerprint),
                another width or another backbone.
            promptcore.errors.UserError: the method cannot be served on this backbone (the message says why).
        """
        ...

    def prepare(self, prompt: LoadedPrompt, operation: str, payload: Any, params: dict[str, Any]) -> Request:
        """Checks and converts one request's raw input before it is queued: image bytes or a PIL image (vision),
        a string or a list of chat messages ``[{"role", "content"}]`` (text).

        Raises:
            promptcore.errors.UserError: a malformed input or parameter, naming the field; an input over a limit
                raises :class:`LimitError` (HTTP 413).
        """
        ...

    def classify(self, requests: list[Request]) -> list[Classification]:
        """One mixed batch of ``classify`` requests, in order (prompts already on :attr:`device`)."""
        ...

    def generate(self, requests: list[Request]) -> Iterator[list[GenerationStep | None]]:
        """Streams one mixed batch of ``generate`` requests: one list per decoding step, an entry per request in
        order, None for a request that finished at an earlier step. Vision backends raise ``UserError``."""
        ...


class LimitError(UserError):
    """An input over one of the server's limits (body bytes, image pixels, text tokens, ``max_tokens``): HTTP 413."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask; :meth:`ServingBackend.prepare` raises :class:`LimitError` past them.

    Attributes:
        max_image_pixels: height x width of a decoded image, before any resizing.
        max_input_tokens: tokens of a text input after the prompt's template.
        max_new_tokens: the largest ``max_tokens`` a ``generate`` request may ask for.
        max_top_k: the largest ``top_k`` of a ``classify`` request.
    """

    max_image_pixels: int = 4096 * 4096
    max_input_tokens: int = 4096
    max_new_tokens: int = 1024
    max_top_k: int = 1000


BackendBuilder = Callable[..., ServingBackend]
BACKENDS: Registry[BackendBuilder] = Registry("serving backend")
"""Kind (``vision``, ``text``, ``vision-language``) -> ``build(model_section: dict | None, prompt_folders: list[Path], device:
torch.device, limits: Limits) -> ServingBackend``: the backbone a served prompt set runs on, from the package's
``model`` section (a mapping as in its run configs' ``model:``) or, when that is None, from the model section the
first of ``prompt_folders`` records (prompt files record the model section and seed they were trained with)."""


def check_prompt_weights(meta: dict[str, Any], ours: str | None, folder: str | Path, label: str) -> None:
    """Refuses a prompt folder (its ``prompt_config.json`` read as ``meta``) trained on other frozen weights than
    ``label``'s (a served backbone, as the message names it), whose weights fingerprint is ``ours`` (None: weights
    that cannot be fingerprinted, quantized or sharded; their sizes are still checked on load).

    Raises:
        promptcore.PromptFileError: the fingerprints differ, or the folder records none.
    """
    from ..files import PromptFileError
    from ..fingerprint import FINGERPRINT_KEY

    theirs = meta.get(FINGERPRINT_KEY)
    if ours is not None and theirs != ours:
        found = f"weights fingerprint {theirs}" if theirs else "no weights fingerprint"
        raise PromptFileError(
            f"prompt folder {folder} records {found} (backbone {meta.get('backbone')!r}), but {label} has weights "
            f"fingerprint {ours}: the prompt was trained on other weights; serve it with the backbone it was trained on"
        )


def read_served_prompt_config(folder: Path, ours: str | None, label: str) -> dict[str, Any]:
    """The ``prompt_config.json`` of prompt folder ``folder``, checked against the served weights
    (:func:`check_prompt_weights`).

    Raises:
        promptcore.PromptFileError: the folder is missing or corrupt (the protocol's one error for a folder that
            cannot be served), or its prompt was trained on other weights.
    """
    from ..errors import MissingFileError
    from ..files import PromptFileError, read_prompt_config

    try:
        meta = read_prompt_config(folder)
    except MissingFileError as e:
        raise PromptFileError(str(e)) from None
    check_prompt_weights(meta, ours, folder, label)
    return meta


def served_model_section(model_section: dict[str, Any] | None, prompt_folders: list[Path]) -> tuple[dict[str, Any], int]:
    """The model section a backend builder serves and the seed of a ``random:`` backbone: ``model_section`` (a run
    config's ``model:`` mapping, plus an optional ``seed``) or, when None, the model section and seed the first of
    ``prompt_folders`` records.

    Raises:
        promptcore.errors.UserError: neither is given; promptcore.PromptFileError: the folder records no model section.
    """
    from ..files import PromptFileError, read_prompt_config

    if model_section is not None:
        section = dict(model_section)
        return section, int(section.pop("seed", 0) or 0)
    if not prompt_folders:
        raise UserError("model: give the model section, or at least one prompt folder whose recorded model section to serve")
    meta = read_prompt_config(prompt_folders[0])
    if not isinstance(meta.get("model"), dict):
        raise PromptFileError(f"prompt folder {prompt_folders[0]} records no model section; give the model section to serve")
    return dict(meta["model"]), int(meta.get("seed", 0) or 0)


def backend_for(kind: str) -> BackendBuilder:
    """The registered backend builder of ``kind`` (the package that registers it is imported first)."""
    if kind not in BACKENDS:
        from ..plugins import load_plugins

        load_plugins()
    return BACKENDS.get(kind)


__all__ = [
    "BACKENDS",
    "OPERATIONS",
    "BackendBuilder",
    "Classification",
    "GenerationStep",
    "LimitError",
    "Limits",
    "LoadedPrompt",
    "PromptInfo",
    "Request",
    "ServingBackend",
    "backend_for",
    "check_prompt_weights",
    "read_served_prompt_config",
    "served_model_section",
]
