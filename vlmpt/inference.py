"""Inference from a prompt folder: :func:`load_prompted` rebuilds the model a folder was trained as, and
:func:`answer` / :func:`classify` put images (and a question) through it as training put its rows.

A folder written by ``vlmpt train`` records what this needs besides the prompt's own config: the ``model`` section
and ``seed`` (a ``random:`` backbone is rebuilt from them), the method's config, the ``task`` (its type, answer
length and class words) and the ``inputs`` (the data template, its columns and ``max_length``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from promptcore import PromptFileError, read_prompt_config, wrap
from promptcore.config import from_dict
from promptcore.errors import UserError
from promptcore.methods import recorded_method_config

from .answers import AnswerScorer, ClassScorer
from .data import VLMDataConfig, VLMEncoder, collate_examples, load_image
from .loading import VLMModelConfig, load_model_and_processor, load_processor
from .model import VLMPromptedModel

INPUT_KEYS = ("template", "image_column", "question_column", "answer_column", "max_length")
"""The fields of the data section a prompt folder records under ``inputs``: how a request becomes an input."""


def prepare_for_inference(model: VLMPromptedModel, processor: Any, task: Any, data: VLMDataConfig, class_names: list[str] | None = None) -> None:
    """Gives ``model`` what :func:`answer` and :func:`classify` read: ``processor``, ``data_config`` (how an image and
    question become an input) and the ``answer_scorer`` of ``task`` (a :class:`vlmpt.run_config.VLMTaskConfig`;
    ``classify``: the words ``class_names``)."""
    model.processor = processor
    model.data_config = data
    if task.type == "classify":
        model.answer_scorer = ClassScorer(processor.tokenizer, class_names)
    else:
        model.answer_scorer = AnswerScorer(processor.tokenizer, task.max_new_tokens)


def load_prompted(folder: str | Path, model: nn.Module | None = None, processor: Any = None) -> VLMPromptedModel:
    """The ready prompted model (eval mode) a folder written by ``vlmpt train`` was trained as, from the folder
    alone, set up for :func:`answer` / :func:`classify`.

    Args:
        folder: a prompt folder (a run's ``best/`` or ``last/``).
        model: the frozen ``...ForConditionalGeneration`` backbone to put the prompt on; None builds the one the
            folder records (its ``model`` section with its ``seed``, so a ``random:`` backbone is the one trained on).
        processor: the backbone's processor; None loads the one the ``model`` section names.

    Raises:
        PromptFileError: the folder is missing or corrupt, records no method config, no model section (when
            ``model`` or ``processor`` is None), no task, or does not fit the backbone.
    """
    from .run_config import VLMTaskConfig

    source = f"prompt folder {folder}"
    meta = read_prompt_config(folder)
    config = recorded_method_config(
        meta, "text", source, "wrap the backbone with the training config's method and load it: promptcore.wrap(backbone, config).load_prompts(folder)"
    )
    if model is None or processor is None:
        section = meta.get("model")
        if not isinstance(section, dict):
            raise PromptFileError(f"{source} records no model section; pass the backbone and its processor: vlmpt.load_prompted(folder, model, processor)")
        model_cfg = from_dict(VLMModelConfig, section, source=f"{source} model")
        if model is None:
            model, own = load_model_and_processor(model_cfg, int(meta.get("seed", 0)))
            processor = processor or own
        else:
            processor = load_processor(model_cfg)
    for key in ("task", "inputs"):
        if not isinstance(meta.get(key), dict):
            raise PromptFileError(f"{source} records no {key} section (it was not written by 'vlmpt train'); run 'vlmpt generate -c CONFIG --prompts {folder}' with the training config")
    task = from_dict(VLMTaskConfig, meta["task"], source=f"{source} task")
    if task.type == "classify" and not task.class_names:
        raise PromptFileError(f"{source} records no class words of its classify task; run 'vlmpt generate -c CONFIG --prompts {folder}' with the training config")
    data = from_dict(VLMDataConfig, {k: v for k, v in meta["inputs"].items() if k in INPUT_KEYS}, source=f"{source} inputs")
    prompted = wrap(model, config, name=meta.get("backbone"))
    prompted.load_prompts(folder)
    prepare_for_inference(prompted, processor, task, data, task.class_names)
    prompted.record_in_prompt_files(**{k: meta[k] for k in ("model", "seed", "method_config", "task", "inputs", "data", "evaluation") if k in meta})
    return prompted.eval()


def encode_images(model: VLMPromptedModel, images: Sequence[Any], question: str | None = None) -> dict[str, Any]:
    """The batch of ``images`` (PIL images or paths of image files), each with ``question`` in the data template,
    through the model's processor and chat template as training encoded its rows, on the model's device.

    Raises:
        UserError: a model without ``processor`` / ``data_config`` (not from :func:`load_prompted` or the
            ``vlmpt`` recipe), no images, an image that cannot be read, a template the question cannot fill, or an
            input longer than the recorded ``max_length`` allows.
    """
    if getattr(model, "processor", None) is None or getattr(model, "data_config", None) is None:
        raise UserError(
            f"{type(model).__name__} has no processor and data config to encode images with; load it with "
            f"vlmpt.load_prompted(folder), or call vlmpt.prepare_for_inference(model, processor, task, data) first"
        )
    if not images:
        raise UserError("no images given; pass at least one image or image file")
    cfg = model.data_config
    encoder = VLMEncoder(model.processor, cfg)
    row = {} if cfg.question_column is None or question is None else {cfg.question_column: question}
    instruction = encoder.instruction(row, "question")
    examples = [
        encoder.prompt(load_image(str(image) if isinstance(image, Path) else image, Path("."), f"image {image}"), instruction, f"image {image}")
        for image in images
    ]
    batch = collate_examples(examples, encoder.tokenizer.padding_side, encoder.tokenizer.pad_token_id)
    return {k: v.to(model.device) for k, v in batch.items()}


@torch.no_grad()
def answer(model: VLMPromptedModel, images: Sequence[Any], question: str | None = None, max_new_tokens: int | None = None) -> list[str]:
    """The answer (or caption) the prompted model writes for each image: greedy, at most ``max_new_tokens``
    tokens (default: the task's ``max_new_tokens``), decoded without special tokens."""
    scorer = model.answer_scorer
    if not isinstance(scorer, AnswerScorer):
        raise UserError("answer() writes answers of a generate task; this prompt classifies: use vlmpt.classify(model, images, question)")
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise UserError(f"max_new_tokens must be positive, got {max_new_tokens}")
    batch = encode_images(model, images, question)
    return scorer.decode(model.generate(max_new_tokens or scorer.max_new_tokens, scorer.eos_token_id, **batch))


@torch.no_grad()
def classify(model: VLMPromptedModel, images: Sequence[Any], question: str | None = None) -> torch.Tensor:
    """``[N, C]``: the probability of each class word (``model.answer_scorer.class_names``, in class order) for
    each image, from the summed log-probabilities of its tokens after the input (:meth:`VLMPromptedModel.class_scores`)."""
    scorer = model.answer_scorer
    if not isinstance(scorer, ClassScorer):
        raise UserError("classify() scores class words of a classify task; this prompt writes answers: use vlmpt.answer(model, images, question)")
    batch = encode_images(model, images, question)
    images_in = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    return model.class_scores(batch["input_ids"], batch["attention_mask"], scorer.class_ids, **images_in).softmax(-1)


__all__ = ["answer", "classify", "encode_images", "load_prompted", "prepare_for_inference"]
