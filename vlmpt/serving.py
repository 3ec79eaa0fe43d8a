"""Serving vision-language prompts: the ``vision-language`` serving backend (``vlmpt serve``, docs/vlm.md).

:class:`VLMBackend` is the :class:`promptcore.serving.ServingBackend` of one frozen vision-language model: prompt
folders written by ``vlmpt train`` open on it with :func:`vlmpt.load_prompted` (the served weights' fingerprint,
the method and the sizes are checked there), a request (OpenAI chat messages with one image part and the question
as a text part) goes through the prompt's data template, the model's processor and its chat template as training
encoded its rows (:meth:`VLMBackend.prepare`), and a batch is decoded greedily by
:meth:`vlmpt.VLMPromptedModel.generate`, so each answer is the one ``vlmpt generate`` writes.

Mixed batches: rows whose prompts all sit in the language model with the same numbers of prompt rows and prefix
positions (``vlm_prompt_tuning`` prompts of one length; ``vlm_prefix`` prompts of one length) run in one forward,
each row with its own prompt (:class:`MixedRows`). A method with prompts inside the backbone (``vlm_vpt``,
``vlm_coupled``: the vision tower's) runs one prompt per forward; so do rows of different prompt shapes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from promptcore.config import from_dict
from promptcore.errors import UserError
from promptcore.fingerprint import backbone_fingerprint
from promptcore.serving import BACKENDS, GenerationStep, LimitError, Limits, PromptInfo, Request, read_served_prompt_config, served_model_section
from textpt.fast_prefix import KeyValues
from textpt.serving import Detokenizer

from .answers import AnswerScorer
from .data import VLMEncoder, collate_examples
from .inference import load_prompted
from .loading import VLMModelConfig, load_model_and_processor
from .model import VLMPromptedModel

GENERATE_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "stop")


@dataclasses.dataclass
class VLMPrompt:
    """A prompt folder opened on a :class:`VLMBackend` (a :class:`promptcore.serving.LoadedPrompt`): the prompted
    model on the served backbone, ready for :func:`vlmpt.answer`."""

    info: PromptInfo
    model: VLMPromptedModel

    def to(self, device: torch.device) -> "VLMPrompt":
        for module in self.model.prompt_modules().values():
            module.to(device)
        return self


class MixedRows(VLMPromptedModel):
    """One forward of rows with different prompts: row ``i`` gets ``models[i]``'s shallow prompt and prefix keys and
    values. Every model wraps the same backbone, sits in the language model only and has the same numbers of prompt
    rows and prefix positions (:func:`mix_key`)."""

    def __init__(self, models: list[VLMPromptedModel]) -> None:
        super().__init__(models[0].backbone, models[0].backbone_name)
        self.rows = list(models)  # a plain list: the models are not submodules of this view

    @property
    def num_prompt_tokens(self) -> int:
        return self.rows[0].num_prompt_tokens

    @property
    def num_prefix_tokens(self) -> int:
        return self.rows[0].num_prefix_tokens

    def shallow_prompt(self, batch_size: int) -> torch.Tensor:
        return torch.cat([m.shallow_prompt(1) for m in self._rows(batch_size)])

    def prefix_key_values(self, batch_size: int) -> KeyValues:
        layers = zip(*(m.prefix_key_values(1) for m in self._rows(batch_size)))
        return [(torch.cat([k for k, _ in layer]), torch.cat([v for _, v in layer])) for layer in layers]

    def _rows(self, batch_size: int) -> list[VLMPromptedModel]:
        if batch_size != len(self.rows):
            raise ValueError(f"MixedRows holds {len(self.rows)} rows' prompts, the batch has {batch_size} rows")
        return self.rows


def mix_key(model: VLMPromptedModel) -> tuple[Any, ...]:
    """Rows whose models have equal keys share a forward: language-model prompts of the same shape; a model with
    prompts inside the backbone (its own :meth:`~vlmpt.VLMPromptedModel.prompted_backbone`) only with itself."""
    if type(model).prompted_backbone is not VLMPromptedModel.prompted_backbone:
        return ("alone", id(model))
    return ("rows", model.num_prompt_tokens, model.num_prefix_tokens)


class VLMBackend:
    """One frozen vision-language model serving many prompt folders (the ``vision-language``
    :class:`promptcore.serving.ServingBackend`; it only generates).

    Args:
        backbone: the frozen transformers ``...ForConditionalGeneration`` model (:data:`vlmpt.FAMILIES`).
        processor: its processor. name: the backbone's name as prompt folders record it.
        device: where batches run. limits: what one request may ask.
    """

    kind: ClassVar[str] = "vision-language"

    def __init__(self, backbone: nn.Module, processor: Any, name: str, device: torch.device, limits: Limits = Limits()) -> None:
        self.fingerprint = backbone_fingerprint(backbone)
        self.backbone = backbone.to(device).eval()
        self.processor, self.name, self.device, self.limits = processor, name, device, limits
        self.backbone_nbytes = sum(t.numel() * t.element_size() for t in (*backbone.parameters(), *backbone.buffers()))

    # -- prompts --
    def open_prompt(self, folder: Path, name: str) -> VLMPrompt:
        """Opens prompt folder ``folder`` under ``name`` on the CPU (:func:`vlmpt.load_prompted` on the served
        backbone and processor).

        Raises:
            promptcore.PromptFileError: missing or corrupt, made for other weights (fingerprint) or another
                backbone, or not written by ``vlmpt train``.
            promptcore.errors.UserError: a method that is not a vision-language one, or a prompt of a classify task.
        """
        source = f"prompt folder {folder}"
        meta = read_served_prompt_config(folder, self.fingerprint, f"the served backbone {self.name!r}")
        model = load_prompted(folder, self.backbone, self.processor)
        if not isinstance(model, VLMPromptedModel):
            raise UserError(f"{source} holds a {model.method!r} prompt, not a vision-language one; serve it with the program of its package")
        if not isinstance(model.answer_scorer, AnswerScorer):
            raise UserError(
                f"{source} is a prompt of a classify task; this server generates answers only: score its classes "
                f"offline with 'vlmpt generate --prompts {folder} IMAGE' (vlmpt.classify)"
            )
        state = model.prompt_state_dict()
        info = PromptInfo(
            name=name, method=model.method, task="generation", operations=("generate",), classes=None,
            num_parameters=sum(t.numel() for t in state.values()),
            nbytes=sum(t.numel() * t.element_size() for t in state.values()),
            meta=meta,
        )
        return VLMPrompt(info, model).to(torch.device("cpu"))

    # -- requests --
    def prepare(self, prompt: VLMPrompt, operation: str, payload: Any, params: dict[str, Any]) -> Request:
        """Checks one request and encodes it as training encoded its rows: chat messages ``[{"role": "user",
        "content": [image part, text part]}]`` (OpenAI's ``{"type": "image_url", "image_url": {"url":
        "data:image/...;base64,..."}}`` and ``{"type": "text", "text": question}``) become the prompt's data template
        filled with the question, through the model's chat template and processor with the image.

        Raises:
            UserError: an operation other than ``generate``, a malformed message or image (naming the field), or
                sampling (``temperature`` above 0: the answers are greedy).
            LimitError: an image over ``limits.max_image_pixels``, more input tokens than ``limits.max_input_tokens``,
                or more ``max_tokens`` than ``limits.max_new_tokens``.
        """
        if operation != "generate":
            raise UserError(f"operation: prompt {prompt.info.name!r} writes answers about images; it cannot {operation}")
        image, question = self._image_and_question(payload)
        model = prompt.model
        cfg = model.data_config
        if cfg.question_column is None and question is not None:
            raise UserError(
                f"messages: prompt {prompt.info.name!r} was trained on the fixed instruction {cfg.template!r}, which takes "
                f"no question; send the image part alone"
            )
        if cfg.question_column is not None and question is None:
            raise UserError(f"messages: prompt {prompt.info.name!r} answers a question about the image; add a text part with the question")
        encoder = VLMEncoder(self.processor, cfg)
        row = {} if question is None else {cfg.question_column: question}
        example = encoder.prompt(image, encoder.instruction(row, "messages"), "messages")
        tokens = len(example["input_ids"])
        if tokens > self.limits.max_input_tokens:
            raise LimitError(f"messages: {tokens} input tokens (the image's included), over the limit of {self.limits.max_input_tokens}; send a smaller image or a shorter question")
        checked = self._check_params(model, dict(params))
        return Request(prompt=prompt, operation=operation, input=example, params=checked, num_input_tokens=tokens)

    def _image_and_question(self, payload: Any) -> tuple[Any, str | None]:
        """The image and the question (None: no text part) of one user message."""
        if isinstance(payload, str):
            raise UserError("prompt: a vision-language prompt needs an image; send chat messages with an image_url part to /v1/chat/completions")
        if not (isinstance(payload, list) and payload and all(isinstance(m, dict) for m in payload)):
            raise UserError(f"messages: expected a non-empty list of chat messages, got {type(payload).__name__}")
        if len(payload) != 1 or payload[0].get("role") != "user":
            roles = [m.get("role") for m in payload]
            raise UserError(f"messages: a prompt answers one user message with one image, as it was trained; got roles {roles}")
        content = payload[0].get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise UserError(f"messages[0].content: expected a list of content parts, got {type(content).__name__}")
        images, texts = [], []
        for i, part in enumerate(content):
            where = f"messages[0].content[{i}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else None
                if not isinstance(url, str):
                    raise UserError(f"{where}.image_url: expected {{\"url\": \"data:image/png;base64,...\"}}")
                images.append(self._decode_image(url, f"{where}.image_url.url"))
            elif kind == "text":
                if not isinstance(part.get("text"), str):
                    raise UserError(f"{where}.text: expected a string")
                texts.append(part["text"])
            else:
                raise UserError(f"{where}: expected a part of type 'image_url' or 'text', got {part!r:.80}")
        if len(images) != 1:
            raise UserError(f"messages[0].content: {len(images)} image parts; a prompt answers about exactly one image (an image_url part with a data URL)")
        if len(texts) > 1:
            raise UserError(f"messages[0].content: {len(texts)} text parts; send the question as one text part")
        return images[0], texts[0] if texts else None

    def _decode_image(self, url: str, where: str) -> Any:
        """The RGB image of a ``data:image/...;base64,...`` URL; remote URLs are not fetched."""
        from PIL import Image, UnidentifiedImageError

        if not url.startswith("data:"):
            raise UserError(f"{where}: the server fetches no remote images; send the image inline as data:image/png;base64,...")
        header, sep, data = url.partition(",")
        media = header[len("data:"):].split(";")[0]
        if not sep or not header.endswith(";base64"):
            raise UserError(f"{where}: expected a base64 data URL, data:image/png;base64,...")
        if not media.startswith("image/"):
            raise UserError(f"{where}: a data URL of type {media or 'text/plain'!r}, not an image; send data:image/png;base64,... (or jpeg, webp)")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise UserError(f"{where}: the data after 'base64,' is not valid base64") from None
        try:
            image = Image.open(io.BytesIO(raw))
        except UnidentifiedImageError:
            raise UserError(f"{where}: the data is not an image file PIL can read") from None
        if image.width * image.height > self.limits.max_image_pixels:
            raise LimitError(f"{where}: the image has {image.width}x{image.height} pixels, over the limit of {self.limits.max_image_pixels}")
        return image.convert("RGB")

    def _check_params(self, model: VLMPromptedModel, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k, v in params.items() if k not in GENERATE_PARAMS and v is not None)
        if unknown:
            raise UserError(f"{unknown[0]}: not a parameter of generate (it takes {', '.join(GENERATE_PARAMS)})")
        max_tokens = params.get("max_tokens")
        max_tokens = model.answer_scorer.max_new_tokens if max_tokens is None else max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise UserError(f"max_tokens: must be a positive integer, got {max_tokens!r}")
        if max_tokens > self.limits.max_new_tokens:
            raise LimitError(f"max_tokens: {max_tokens} is over the limit of {self.limits.max_new_tokens}")
        temperature = params.get("temperature")
        if temperature not in (None, 0):
            raise UserError(
                f"temperature: vision-language prompts answer greedily, as 'vlmpt generate' does; send temperature 0, got "
                f"{temperature!r} (OpenAI clients send 1 when it is not given)"
            )
        stop = params.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
            raise UserError(f"stop: a non-empty string or a list of non-empty strings, got {params['stop']!r}")
        return {"max_tokens": max_tokens, "temperature": 0.0, "stop": list(stop or [])}

    # -- batches --
    def classify(self, requests: list[Request]) -> list[Any]:
        raise UserError("operation: vision-language prompts generate answers; classify is not served")

    def generate(self, requests: list[Request]) -> Iterator[list[GenerationStep | None]]:
        """Decodes a mixed batch greedily (:meth:`vlmpt.VLMPromptedModel.generate`, rows grouped by
        :func:`mix_key` into as few forwards as the methods allow), then streams it: one list per token, with the text
        each token adds, stop strings cut (the text before one is returned, the stop string is not)."""
        tokens = self.decode(requests)
        eos = self.processor.tokenizer.eos_token_id
        texts = [Detokenizer(self.processor.tokenizer, r.params["stop"]) for r in requests]
        finished = [False] * len(requests)
        for step in range(max(len(t) for t in tokens)):
            out: list[GenerationStep | None] = []
            for i, row in enumerate(tokens):
                if finished[i] or step >= len(row):
                    finished[i] = True
                    out.append(None)
                    continue
                token = row[step]
                text, stopped = texts[i].add(token)
                reason = "stop" if stopped or token == eos else ("length" if step + 1 >= requests[i].params["max_tokens"] else None)
                if reason is not None:
                    text += "" if stopped else texts[i].rest()
                    finished[i] = True
                out.append(GenerationStep(text=text, token_ids=[token], finish_reason=reason))
            yield out
            if all(finished):
                return

    @torch.no_grad()
    def decode(self, requests: list[Request]) -> list[list[int]]:
        """Each request's greedy tokens (up to its ``max_tokens``; the EOS, when written, last)."""
        tokenizer = self.processor.tokenizer
        eos = tokenizer.eos_token_id
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(mix_key(r.prompt.model), []).append(i)
        out: list[list[int]] = [[] for _ in requests]
        for rows in groups.values():
            models = [requests[i].prompt.model for i in rows]
            runner = models[0] if all(m is models[0] for m in models) else MixedRows(models)
            batch = collate_examples([requests[i].input for i in rows], tokenizer.padding_side, tokenizer.pad_token_id)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            steps = max(requests[i].params["max_tokens"] for i in rows)
            new = runner.generate(steps, eos, **batch)
            for i, row in zip(rows, new.tolist()):
                row = row[: requests[i].params["max_tokens"]]
                out[i] = row[: row.index(eos) + 1] if eos in row else row
        return out


def build_vlm_backend(model_section: dict[str, Any] | None, prompt_folders: list[Path], device: torch.device, limits: Limits = Limits()) -> VLMBackend:
    """The ``vision-language`` backend builder of :data:`promptcore.serving.BACKENDS`: the backbone and processor of
    ``model_section`` (a run config's ``model:`` mapping, plus an optional ``seed`` for a ``random:`` backbone) or,
    when None, the ones the first of ``prompt_folders`` records."""
    section, seed = served_model_section(model_section, prompt_folders)
    cfg = from_dict(VLMModelConfig, section, source="model")
    backbone, processor = load_model_and_processor(cfg, seed)
    return VLMBackend(backbone, processor, cfg.name, device, limits)


BACKENDS.add("vision-language", build_vlm_backend)

__all__ = ["MixedRows", "VLMBackend", "VLMPrompt", "build_vlm_backend", "mix_key"]
