"""Serving text prompts: prompt folders that carry what inference needs, and the ``text`` serving backend.

- :func:`inference_record`: what ``textpt train`` records in every prompt folder besides the prompt's own config:
  the run's ``model`` section and ``seed`` (a ``random:`` backbone is rebuilt from them), the full method config
  (``method_config``) and, under ``inference``, how inputs were encoded (template, text column, length limit and
  truncation side), the class names and whether the prompt classifies or generates.
- :func:`load_prompted`: one call from a prompt folder (and optionally the backbone it runs on) to a ready
  :class:`textpt.model.TextPromptedModel`, without the training config or data.
- :class:`TextBackend`: the :class:`promptcore.serving.ServingBackend` of kind ``text``: one frozen backbone, many
  prompt folders opened on it (:meth:`TextBackend.open_prompt`), requests checked and tokenized before they are
  queued (:meth:`TextBackend.prepare`), and mixed batches run by :mod:`textpt.mixed` (or by vLLM, ``engine: vllm``:
  :mod:`textpt.vllm`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from promptcore import PromptFileError, read_prompt_config
from promptcore.config import from_dict, to_dict
from promptcore.errors import UserError
from promptcore.fingerprint import backbone_fingerprint
from promptcore.methods import recorded_method_config
from promptcore.registry import did_you_mean
from promptcore.serving import BACKENDS, Classification, GenerationStep, LimitError, Limits, PromptInfo, Request, read_served_prompt_config, served_model_section

from . import mixed
from .config import TextModelConfig
from .model import TextPromptedModel

INFERENCE_KEY = "inference"
"""The key of a prompt folder's config that holds how inputs are encoded and what the prompt answers."""


# ----- what a prompt folder records -------------------------------------------------------------------------------
def inference_record(cfg: Any, max_length: int | None, class_names: list[str] | None) -> dict[str, Any]:
    """What :func:`load_prompted` needs besides the prompt's own config, from a resolved
    :class:`textpt.run_config.TextRunConfig`: ``model`` (the section, ``checkpoint`` left out), ``seed``
    (``train.seed``, which builds a ``random:`` backbone), ``method_config`` and ``inference`` (``template``,
    ``text_column``, ``max_length``: the longest input as training cut it, ``truncation_side``, ``class_names``,
    ``operation``: ``classify`` or ``generate``)."""
    from .tasks import TASKS

    classify = TASKS.get(cfg.model.task).learns_labels(cfg.data.target_column)
    names = class_names or ([w.strip() for w in cfg.prompt.verbalizer] if cfg.prompt.verbalizer else None)
    return {
        "model": {k: v for k, v in to_dict(cfg.model).items() if k != "checkpoint"},
        "seed": cfg.train.seed,
        "method_config": to_dict(cfg.prompt),
        INFERENCE_KEY: {
            "template": cfg.data.template,
            "text_column": cfg.data.text_column,
            "max_length": max_length,
            "truncation_side": cfg.data.truncation_side,
            "class_names": list(names) if names else None,
            "operation": "classify" if classify else "generate",
        },
    }


@dataclasses.dataclass
class InputFormat:
    """How a prompt's inputs are encoded, as its training encoded them (a folder's ``inference`` record).

    Attributes:
        template: the data template (``{column}`` fields). text_column: the field a request's text fills.
        max_length: the longest input in tokens (the text field is cut beyond it), or None.
        truncation_side: which end of the text is cut. class_names: names of the classes, in order.
        operation: ``classify`` or ``generate``.
    """

    template: str = "{text}"
    text_column: str = "text"
    max_length: int | None = None
    truncation_side: str = "right"
    class_names: list[str] | None = None
    operation: str = "generate"

    @classmethod
    def of(cls, meta: dict[str, Any], model: TextPromptedModel) -> "InputFormat":
        """The record of a folder's config ``meta``; a folder written before records existed gets the plain text as
        input and the model's own answer (class scores when it classifies)."""
        record = meta.get(INFERENCE_KEY)
        if isinstance(record, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in record.items() if k in known})
        words = model.config.verbalizer
        classify = model.classifies or (model.task == "seq2seq" and bool(words))
        return cls(class_names=[w.strip() for w in words] if words else None, operation="classify" if classify else "generate")

    def encode(self, tokenizer: Any, text: str, cut: bool = True) -> list[int]:
        """The token ids of ``text`` put through the template (special tokens included), cut to :attr:`max_length`
        as in training (``cut=False``: whole)."""
        from .data import ExampleEncoder

        limit = self.max_length if cut else None
        encoder = ExampleEncoder(tokenizer, None, self.template, self.text_column, limit, truncation_side=self.truncation_side)
        examples, _ = encoder.encode({self.text_column: [text]}, split="request")
        return list(examples[0]["input_ids"])


def method_config_of(meta: dict[str, Any], source: str) -> Any:
    """The method config a prompt folder's ``meta`` records, validated (:func:`promptcore.methods.recorded_method_config`)."""
    return recorded_method_config(
        meta, "text", source,
        "wrap the backbone with the training config's method and load it: textpt.wrap(backbone, config, tokenizer).load_prompts(folder)",
    )


def load_prompted(folder: str | Path, model: nn.Module | None = None, tokenizer: Any = None) -> TextPromptedModel:
    """A ready prompted model from a prompt folder: the method config, task, pooling, verbalizer and head it
    records, the prompts loaded, in eval mode; its input format is ``model.input_format``
    (:class:`InputFormat`).

    Args:
        folder: a prompt folder written by ``textpt train`` (a run's ``best/`` or ``last/``).
        model: the frozen transformers backbone to put it on; None builds the one the folder records (its ``model``
            section, seeded with its ``seed``, so a ``random:`` backbone is the one trained on).
        tokenizer: the backbone's tokenizer (with ``model``; None: the one the folder's ``model`` section names).

    Raises:
        PromptFileError: the folder is missing, corrupt, records no method config, or does not fit ``model``.
    """
    from . import wrap
    from .loading import load_model_and_tokenizer, load_tokenizer

    source = f"prompt folder {folder}"
    meta = read_prompt_config(folder)
    config = method_config_of(meta, source)
    section = meta.get("model")
    if model is None or tokenizer is None:
        if not isinstance(section, dict):
            raise PromptFileError(f"{source} records no model section; pass the backbone and its tokenizer: textpt.load_prompted(folder, model, tokenizer)")
        model_cfg = from_dict(TextModelConfig, section, source=f"{source} model")
        if model is None:
            from promptcore.trainer import seed_everything

            seed_everything(int(meta.get("seed", 0)))
            model, own = load_model_and_tokenizer(model_cfg)
            tokenizer = tokenizer or own
        else:
            tokenizer = load_tokenizer(model_cfg.tokenizer or model_cfg.name, model_cfg.padding_side)
    task = meta.get("task")
    prompted = wrap(model, config, tokenizer=tokenizer, task=task, name=meta.get("backbone"), pooling=(meta.get("pooling") or "auto") if task == "seq_cls" else "auto")
    prompted.load_prompts(folder)
    prompted.record_in_prompt_files(**{k: meta[k] for k in ("model", "seed", "method_config", INFERENCE_KEY) if k in meta})
    prompted.input_format = InputFormat.of(meta, prompted)
    return prompted.eval()


# ----- the serving backend ------------------------------------------------------------------------------------------
GENERATE_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "stop")
CLASSIFY_PARAMS = ("top_k",)


@dataclasses.dataclass
class TextPrompt:
    """A prompt folder opened on a :class:`TextBackend` (a :class:`promptcore.serving.LoadedPrompt`): the prompted
    model on the served backbone, and its input format."""

    info: PromptInfo
    model: TextPromptedModel

    def to(self, device: torch.device) -> "TextPrompt":
        for module in self.model.prompt_modules().values():
            module.to(device)
        mixed.forget_prefix(self.model)  # its kept keys and values stay where they were computed
        return self


class TextBackend:
    """One frozen text backbone serving many prompt folders (the ``text`` :class:`promptcore.serving.ServingBackend`).

    Args:
        backbone: the frozen transformers model (on ``device``). tokenizer: its tokenizer.
        name: the backbone's name as prompt folders record it. task: its task (``causal_lm``, ``seq2seq``,
            ``seq_cls``).
        device: where batches run. limits: what one request may ask.
        engine: ``hf`` (transformers, every method) or ``vllm`` (generation through vLLM's ``prompt_embeds``,
            :mod:`textpt.vllm`; shallow prompts on causal LMs).
        vllm_options: keyword arguments of ``vllm.LLM`` (``engine: vllm``).
    """

    kind: ClassVar[str] = "text"

    def __init__(
        self, backbone: nn.Module, tokenizer: Any, name: str, task: str, device: torch.device, limits: Limits = Limits(),
        engine: str = "hf", vllm_options: dict[str, Any] | None = None,
    ) -> None:
        if engine not in ("hf", "vllm"):
            raise UserError(f"engine: {engine!r} is not one of hf, vllm")
        self.backbone = backbone.to(device).eval()
        self.tokenizer, self.name, self.task, self.device, self.limits, self.engine = tokenizer, name, task, device, limits, engine
        self.fingerprint = backbone_fingerprint(backbone)
        self.backbone_nbytes = sum(t.numel() * t.element_size() for t in (*backbone.parameters(), *backbone.buffers()))
        self.width = int(backbone.get_input_embeddings().weight.shape[1])
        self._vllm = None
        if engine == "vllm":
            from .vllm import VllmEngine

            self._vllm = VllmEngine(name, backbone, tokenizer, vllm_options)

    # -- prompts --
    def open_prompt(self, folder: Path, name: str) -> TextPrompt:
        """Opens prompt folder ``folder`` under ``name`` on the CPU, after checking it against the served weights.

        Raises:
            promptcore.PromptFileError: missing or corrupt, made for other weights (fingerprint), another width or
                task, or without a method config.
            promptcore.errors.UserError: the method cannot be served here (a prompt bank; a prefix prompt with
                ``engine: vllm``).
        """
        source = f"prompt folder {folder}"
        meta = read_served_prompt_config(folder, self.fingerprint, f"the served backbone {self.name!r}")
        for key, ours in (("dim", self.width), ("task", self.task)):
            if meta.get(key) != ours:
                raise PromptFileError(f"{source} has {key} {meta.get(key)!r} (backbone {meta.get('backbone')!r}); the served backbone {self.name!r} has {key} {ours!r}")
        if int(meta.get("num_tasks", 1)) > 1:
            raise UserError(
                f"{source} is a bank of {meta['num_tasks']} task prompts; the server serves one prompt per name: serve the "
                f"single-task folders it was merged from"
            )
        model = load_prompted(folder, self.backbone, self.tokenizer)
        if self._vllm is not None:
            self._vllm.check_servable(model)
        fmt = model.input_format
        state = model.prompt_state_dict()
        classes = fmt.class_names
        if fmt.operation == "classify" and not classes:
            count = len(model.config.verbalizer or []) or int(model.config.num_classes or 0)
            classes = [f"class {i}" for i in range(count)]
        info = PromptInfo(
            name=name,
            method=model.method,
            task="generation" if fmt.operation == "generate" else "text_classification",
            operations=(fmt.operation,),
            classes=classes if fmt.operation == "classify" else None,
            num_parameters=sum(t.numel() for t in state.values()),
            nbytes=sum(t.numel() * t.element_size() for t in state.values()),
            meta=meta,
        )
        return TextPrompt(info, model).to(torch.device("cpu"))

    # -- requests --
    def prepare(self, prompt: TextPrompt, operation: str, payload: Any, params: dict[str, Any]) -> Request:
        """Checks one request and tokenizes its input: a string goes through the prompt's template (as training
        encoded its inputs), chat messages ``[{"role", "content"}]`` through the tokenizer's chat template.

        Raises:
            UserError: an operation the prompt does not answer, a malformed input or parameter (naming the field).
            LimitError: more input tokens than ``limits.max_input_tokens``, more ``max_tokens`` than
                ``limits.max_new_tokens``, or a ``top_k`` over ``limits.max_top_k``.
        """
        if operation not in prompt.info.operations:
            does = "classifies" if "classify" in prompt.info.operations else "generates text"
            raise UserError(f"operation: prompt {prompt.info.name!r} {does}; it cannot {operation}")
        ids, counted = self._input_ids(prompt, payload)
        if counted > self.limits.max_input_tokens:
            raise LimitError(f"input: {counted} tokens after the prompt's template, over the limit of {self.limits.max_input_tokens}; send a shorter text")
        checked = self._check_params(prompt, operation, dict(params))
        model = prompt.model
        if model.max_positions is not None:
            room = model.max_positions - model.prompt_positions - len(ids)
            wanted = checked.get("max_tokens", 0) if model.strategy.decoder_only else 0
            if room < wanted:
                raise LimitError(
                    f"max_tokens: {wanted} new tokens after {len(ids)} input and {model.prompt_positions} prompt tokens exceed "
                    f"the {model.max_positions} positions of {self.name}; ask for at most {max(room, 0)} or send a shorter text"
                )
        return Request(prompt=prompt, operation=operation, input=ids, params=checked, num_input_tokens=len(ids))

    def _input_ids(self, prompt: TextPrompt, payload: Any) -> tuple[list[int], int]:
        """``(ids, tokens before cutting)``: the request's tokens as the prompt runs them."""
        fmt = prompt.model.input_format
        if isinstance(payload, str):
            if not payload:
                raise UserError("input: empty text; send the text to complete or classify")
            full = fmt.encode(self.tokenizer, payload, cut=False)
            if fmt.max_length is None or len(full) <= fmt.max_length:
                return full, len(full)
            return fmt.encode(self.tokenizer, payload), len(full)
        if isinstance(payload, list) and payload and all(isinstance(m, dict) for m in payload):
            for i, m in enumerate(payload):
                if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                    raise UserError(f"messages[{i}]: each message needs a string 'role' and a string 'content', got keys {sorted(m)}")
            if not getattr(self.tokenizer, "chat_template", None):
                raise UserError(
                    f"messages: the tokenizer of {self.name} has no chat template, so chat messages cannot be put into "
                    f"text; send a prompt string (completions) instead"
                )
            ids = self.tokenizer.apply_chat_template(payload, add_generation_prompt=True, tokenize=True, return_dict=False)
            ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
            return ids, len(ids)
        raise UserError(f"input: expected a string or a non-empty list of chat messages [{{'role', 'content'}}], got {type(payload).__name__}")

    def _check_params(self, prompt: TextPrompt, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        known = GENERATE_PARAMS if operation == "generate" else CLASSIFY_PARAMS
        unknown = sorted(k for k, v in params.items() if k not in known and v is not None)
        if unknown:
            raise UserError(f"{unknown[0]}: not a parameter of {operation} (it takes {', '.join(known)}).{did_you_mean(unknown[0], list(known))}")
        if operation == "classify":
            classes = len(prompt.info.classes or [])
            top_k = _integer(params, "top_k", classes)
            if top_k < 1:
                raise UserError(f"top_k: must be at least 1, got {top_k}")
            if top_k > self.limits.max_top_k:
                raise LimitError(f"top_k: {top_k} is over the limit of {self.limits.max_top_k}")
            return {"top_k": min(top_k, classes)}
        max_tokens = _integer(params, "max_tokens", min(16, self.limits.max_new_tokens))
        if max_tokens < 1:
            raise UserError(f"max_tokens: must be at least 1, got {max_tokens}")
        if max_tokens > self.limits.max_new_tokens:
            raise LimitError(f"max_tokens: {max_tokens} is over the limit of {self.limits.max_new_tokens}")
        temperature = _number(params, "temperature", 1.0)
        if temperature < 0:
            raise UserError(f"temperature: must be 0 (greedy) or more, got {temperature}")
        top_p = _number(params, "top_p", 1.0)
        if not 0 < top_p <= 1:
            raise UserError(f"top_p: must be in (0, 1], got {top_p}")
        seed = params.get("seed")
        if seed is not None:
            seed = _integer(params, "seed", 0)
        stop = params.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
            raise UserError(f"stop: a non-empty string or a list of non-empty strings, got {params['stop']!r}")
        return {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed, "stop": list(stop or [])}

    # -- batches --
    def classify(self, requests: list[Request]) -> list[Classification]:
        """Class probabilities of a mixed batch (:func:`textpt.mixed.class_scores`, softmax over each prompt's
        classes), the ``top_k`` best of each."""
        scores = mixed.class_scores([r.prompt.model for r in requests], [r.input for r in requests])
        out = []
        for request, s in zip(requests, scores):
            probs = s.float().softmax(-1)
            top = probs.topk(request.params.get("top_k", probs.numel()))
            names = request.prompt.info.classes or []
            indices = top.indices.tolist()
            out.append(Classification(labels=[names[i] for i in indices], scores=top.values.tolist(), indices=indices))
        return out

    def generate(self, requests: list[Request]) -> Iterator[list[GenerationStep | None]]:
        """Streams a mixed batch: one list per decoding step (:func:`textpt.mixed.generate`, or vLLM with
        ``engine: vllm``), with the text each step adds, stop strings cut (the text before one is returned, the
        stop string is not)."""
        sampling = [
            mixed.Sampling(max_new_tokens=r.params["max_tokens"], temperature=r.params["temperature"], top_p=r.params["top_p"], seed=r.params["seed"])
            for r in requests
        ]
        if self._vllm is not None:
            steps = self._vllm.generate([r.prompt.model for r in requests], [r.input for r in requests], sampling)
        else:
            steps = mixed.generate([r.prompt.model for r in requests], [r.input for r in requests], sampling)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        texts = [Detokenizer(self.tokenizer, r.params["stop"]) for r in requests]
        finished = [False] * len(requests)
        for tokens in steps:
            out: list[GenerationStep | None] = []
            for i, token in enumerate(tokens):
                if finished[i] or token is None:
                    finished[i] = True
                    out.append(None)
                    continue
                text, stopped = texts[i].add(token)
                reason = None
                if stopped or token == eos:
                    reason = "stop"
                elif len(texts[i].tokens) >= requests[i].params["max_tokens"]:
                    reason = "length"
                if reason is not None:
                    text += texts[i].rest() if not stopped else ""
                    sampling[i].stopped = True
                    finished[i] = True
                out.append(GenerationStep(text=text, token_ids=[token], finish_reason=reason))
            yield out
            if all(finished):
                return


class Detokenizer:
    """One row's text as its tokens arrive: holds back an incomplete character and any end that could begin a stop
    string; cuts the text at the first stop string."""

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self.tokenizer, self.stop, self.tokens, self.sent = tokenizer, stop, [], 0

    def add(self, token: int) -> tuple[str, bool]:
        """``(new text, whether a stop string ended the row)``."""
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        hits = [i for s in self.stop if (i := text.find(s, max(0, self.sent - len(s)))) >= 0]
        if hits:
            new, self.sent = text[self.sent:min(hits)], len(text)
            return new, True
        safe = len(text) - (1 if text.endswith("\ufffd") else 0)
        for s in self.stop:
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe -= k
                    break
        safe = max(safe, self.sent)
        new, self.sent = text[self.sent:safe], safe
        return new, False

    def rest(self) -> str:
        """The text held back, when the row ends."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        new, self.sent = text[self.sent:], len(text)
        return new


def _integer(params: dict[str, Any], key: str, default: int) -> int:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{key}: must be an integer, got {value!r}")
    return value


def _number(params: dict[str, Any], key: str, default: float) -> float:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UserError(f"{key}: must be a number, got {value!r}")
    return float(value)


def build_text_backend(model_section: dict[str, Any] | None, prompt_folders: list[Path], device: torch.device, limits: Limits = Limits(), **options: Any) -> TextBackend:
    """The ``text`` backend builder of :data:`promptcore.serving.BACKENDS`: the backbone of ``model_section`` (a
    run config's ``model:`` mapping, plus an optional ``seed`` for a ``random:`` backbone) or, when None, the one the
    first of ``prompt_folders`` records. ``options``: ``engine`` (``hf`` or ``vllm``) and ``vllm_options``."""
    from promptcore.trainer import seed_everything

    from .loading import load_model_and_tokenizer

    section, seed = served_model_section(model_section, prompt_folders)
    cfg = from_dict(TextModelConfig, section, source="model")
    seed_everything(seed)
    backbone, tokenizer = load_model_and_tokenizer(cfg)
    return TextBackend(backbone, tokenizer, cfg.name, cfg.task, device, limits, **options)


BACKENDS.add("text", build_text_backend)

__all__ = ["INFERENCE_KEY", "Detokenizer", "InputFormat", "TextBackend", "TextPrompt", "build_text_backend", "inference_record", "load_prompted", "method_config_of"]
