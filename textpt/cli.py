"""``textpt`` command line: ``textpt train | eval | generate`` (also ``python -m textpt``).

``train`` and ``eval`` come from the shared CLI (:func:`promptcore.cli.main`); this module is the text recipe it
runs (how to build the model and the data from a :class:`textpt.run_config.TextRunConfig`) plus ``generate``::

    textpt train -c configs/smoke/textpt_tiny.yaml -o runs/tiny
    textpt train -c configs/smoke/textpt_tiny.yaml --set model.task=seq_cls -o runs/tiny_cls
    textpt eval -c configs/smoke/textpt_tiny.yaml --prompts runs/tiny/best
    textpt generate -c configs/smoke/textpt_tiny.yaml --prompts runs/tiny/best "a good movie" "a boring film"

The baselines are methods too: ``linear_probe`` trains only a head, ``zero_shot`` trains nothing (``textpt eval``
and ``generate`` run it without ``--prompts``)::

    textpt train -c configs/textpt/minilm_linear_probe.yaml -o runs/minilm-probe
    textpt eval -c configs/smoke/textpt_tiny.yaml --set "prompt={method: zero_shot}"

Everything here is a few calls a user can make in Python: ``load_model_and_tokenizer``, ``textpt.wrap``,
``build_text_data``.

The module imports no torch (``textpt --help`` and each verb's help come without it): the recipe imports what a verb
needs when the verb runs. The verbs registered by modules that import torch are declared here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING, Sequence

from promptcore.cli import Command, add_config_args, declare_command, load_prompts_option, register_command
from promptcore.errors import UserError
from promptcore.plugins import Deferred
from promptcore.registry import did_you_mean

if TYPE_CHECKING:
    import torch

    from promptcore.recipe import DataBundle

    from .config import TextModelConfig
    from .model import TextPromptedModel
    from .run_config import TextRunConfig


class TextRecipe:
    """The ``textpt`` recipe for :func:`promptcore.cli.main`."""

    prog = "textpt"
    config_class = Deferred("textpt.run_config", "TextRunConfig")

    def resolve_config(self, cfg: TextRunConfig) -> TextRunConfig:
        """``cfg`` with the defaults that depend on other sections filled in (:func:`textpt.run_config.resolve_prompt`:
        on a source that knows its classes, the verbalizer or ``prompt.num_classes``): a new config, or ``cfg``
        itself when nothing is left to fill."""
        from .run_config import resolve_prompt

        prompt = resolve_prompt(cfg.model.task, cfg.prompt, cfg.data)
        return cfg if prompt is cfg.prompt else dataclasses.replace(cfg, prompt=prompt)

    def config_for_prompts(self, cfg: TextRunConfig, prompt_config: dict, directory: str) -> TextRunConfig:
        """``cfg`` with the seed the prompts in ``directory`` were trained with when they were trained on the
        config's ``random:`` backbone (:func:`promptcore.recipe.with_recorded_seed`): ``textpt eval`` and ``textpt
        generate`` rebuild the weights the prompts were trained on."""
        from promptcore.recipe import with_recorded_seed

        same_backbone = cfg.model.name.startswith("random:") and (prompt_config.get("model") or {}).get("name") == cfg.model.name
        return with_recorded_seed(cfg, prompt_config.get("seed") if same_backbone else None, f"prompt folder {directory}")

    def build_model(self, cfg: TextRunConfig) -> TextPromptedModel:
        """The frozen model and tokenizer by name, wrapped with the resolved prompt config (and
        ``model.checkpoint``'s prompts loaded when set), packing its batches as ``data.packing`` says.

        Raises:
            UserError: ``model.kwargs`` holds a key that is neither a ``from_pretrained`` argument nor a field of the
                model's config (transformers refuses it before loading weights; the message names the close matches).
        """
        from promptcore.distributed import uses_sharded_loading

        from . import wrap
        from .loading import load_model_and_tokenizer, sharded_loading

        cfg = self.resolve_config(cfg)
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        with sharded_loading(uses_sharded_loading(cfg.train.distributed, cfg.train.fsdp, world_size, cfg.model.quantization)):
            try:
                backbone, tokenizer = load_model_and_tokenizer(cfg.model)
            except TypeError as e:
                problem = unknown_model_kwarg(e, cfg.model)
                if problem is None:
                    raise
                raise problem from None
            model = wrap(backbone, cfg.prompt, tokenizer=tokenizer, task=cfg.model.task, name=cfg.model.name, pooling=cfg.model.pooling)
        model.set_packing(cfg.data.packing)
        if cfg.model.checkpoint is not None:
            model.load_prompts(cfg.model.checkpoint)
        return model

    def build_data(self, cfg: TextRunConfig, model: TextPromptedModel) -> DataBundle:
        """Train/eval datasets tokenized with the model's tokenizer, within the room the prompt leaves (in batches
        of similar lengths with ``data.group_by_length``)."""
        from .data import build_text_data
        from .packing import length_grouped_order
        from .serving import inference_record

        cfg = self.resolve_config(cfg)
        bundle = build_text_data(
            cfg.data,
            model.tokenizer,
            task=cfg.model.task,
            max_length=self.max_length(cfg, model),
            verbalizer=cfg.prompt.verbalizer,
            num_classes=cfg.prompt.num_classes,
            num_tasks=cfg.prompt.num_tasks,
        )
        if cfg.data.group_by_length and bundle.train is not None:
            bundle.batch_order = length_grouped_order([len(ids) for ids in bundle.train["input_ids"]], cfg.train.batch_size, cfg.train.seed)
        # what inference needs without this config or the data (textpt.load_prompted, the server)
        model.record_in_prompt_files(**inference_record(cfg, bundle.info["max_length"], bundle.class_names))
        return bundle

    @staticmethod
    def max_length(cfg: TextRunConfig, model: TextPromptedModel) -> int | None:
        """The longest input: ``data.max_length``, else ``model.max_length``, else the model's limit less the
        prompt's tokens, within the method's own limit (:func:`textpt.data.model_input_budget`; ``None``: no limit)."""
        from .data import model_input_budget

        return model_input_budget(model, cfg.data.max_length or cfg.model.max_length)

    def generate(self, args: argparse.Namespace) -> int:
        """``textpt generate``: prints each input, then its generation or its classes by probability."""
        import torch

        from promptcore import load_config, read_prompt_config
        from promptcore.trainer import seed_everything

        from .prompt_cache import PROMPT_CACHE_CHOICES
        from .run_config import TextRunConfig
        from .serving import INFERENCE_KEY
        from .tasks import TASKS

        if args.max_new_tokens <= 0:
            raise UserError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
        cfg = self.resolve_config(load_config(TextRunConfig, args.config, args.overrides))
        if not 0 <= args.task < cfg.prompt.num_tasks:
            raise UserError(f"--task {args.task} is not a task of the prompt bank; give 0..{cfg.prompt.num_tasks - 1}")
        recorded = None
        if args.prompts is not None:
            meta = read_prompt_config(args.prompts)  # a missing or foreign folder fails here
            recorded = meta.get(INFERENCE_KEY)
            cfg = self.config_for_prompts(cfg, meta, args.prompts)
        seed_everything(cfg.train.seed)  # as train and eval do: a backbone built without weights is the same one
        model = self.build_model(cfg)
        load_prompts_option(model, args.prompts)
        model.eval()
        model.set_prompt_cache(PROMPT_CACHE_CHOICES[args.prompt_cache])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        batch = self.encode_texts(cfg, model, args.texts)
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["task_ids"] = torch.full((len(args.texts),), args.task, dtype=torch.long, device=device)
        if TASKS.get(cfg.model.task).learns_labels(cfg.data.target_column):
            names = (recorded or {}).get("class_names") or self.class_names(cfg)
            with torch.no_grad():
                probs = model.class_logits(batch["input_ids"], batch["attention_mask"], batch["task_ids"]).float().softmax(-1)
            for i, text in enumerate(args.texts):
                print(f"[{i + 1}] {text}")
                for c in probs[i].argsort(descending=True).tolist():
                    print(f"    {names[c]}  {probs[i, c]:.4f}")
            return 0
        new = model.generate(batch["input_ids"], batch["attention_mask"], batch["task_ids"], max_new_tokens=args.max_new_tokens)
        for i, (text, ids) in enumerate(zip(args.texts, new.tolist())):
            print(f"[{i + 1}] {text}")
            print(f"    {model.tokenizer.decode(ids, skip_special_tokens=True).strip()}")
        return 0

    def encode_texts(self, cfg: TextRunConfig, model: TextPromptedModel, texts: list[str]) -> dict[str, torch.Tensor]:
        """A batch of ``texts`` put through the data template, as the model saw its training inputs."""
        from .data import ExampleEncoder, TextCollator
        from .padding import pad_token_id

        tokenizer = model.tokenizer
        max_length = self.max_length(cfg, model)
        encoder = ExampleEncoder(
            tokenizer, None, cfg.data.template, cfg.data.text_column, max_length, truncation_side=cfg.data.truncation_side
        )
        examples, stats = encoder.encode({cfg.data.text_column: list(texts)}, split="command line")
        if stats.truncated:
            warnings.warn(
                f"shortened {stats.truncated} of {len(texts)} input texts to {max_length} tokens (data.max_length, or the "
                f"model's maximum less the prompt): their {cfg.data.text_column!r} field was cut on the "
                f"{cfg.data.truncation_side}, as in training",
                stacklevel=2,
            )
        return TextCollator(pad_token_id(tokenizer), tokenizer.padding_side)(list(examples))

    @staticmethod
    def class_names(cfg: TextRunConfig) -> list[str]:
        """Names to print for classes: the verbalizer's words, else ``data.label_names``, else the data's
        ``ClassLabel`` names, else ``class 0``, ``class 1``..."""
        from .data import dataset_label_names, load_raw

        if cfg.prompt.verbalizer:
            return [w.strip() for w in cfg.prompt.verbalizer]
        if cfg.data.label_names:
            return list(cfg.data.label_names)
        names = dataset_label_names(load_raw(cfg.data)["train"], cfg.data.label_column)
        return names or [f"class {i}" for i in range(cfg.prompt.num_classes)]


def unknown_model_kwarg(error: TypeError, model: TextModelConfig) -> UserError | None:
    """A :class:`promptcore.UserError` for transformers' ``unexpected keyword argument 'NAME'`` when ``NAME`` is a key
    of ``model.kwargs``, with the close matches among ``from_pretrained``'s arguments and the model config's fields;
    ``None`` for any other error."""
    import inspect

    import transformers

    from .loading import _folder, resolve_name

    found = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if found is None or found[1] not in model.kwargs:
        return None
    name = found[1]
    known = set(inspect.signature(transformers.PreTrainedModel.from_pretrained).parameters)
    kind, target = resolve_name(model.name)
    if kind != "random":
        known |= set(transformers.AutoConfig.from_pretrained(_folder(kind, target)).to_dict())
    return UserError(
        f"model.kwargs.{name}: neither an argument of from_pretrained nor a field of the model's config (transformers: "
        f"{error}).{did_you_mean(name, sorted(known))} Remove it or correct its name"
    )


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Each text is put through the config's data.template (as a row whose text column holds it), then the model "
        "writes a continuation (causal_lm with data.target_column, seq2seq with data.target_column) or scores the "
        "classes (seq_cls, and causal_lm / seq2seq with a verbalizer)."
    )
    add_config_args(p)
    p.add_argument("--prompts", help="prompt folder (a run's best/ or last/); not needed by methods that train nothing")
    p.add_argument("texts", nargs="+", help="input texts (the template's text field)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate per text (default 32)")
    p.add_argument("--task", type=int, default=0, help="task id of a prompt bank (default 0)")
    p.add_argument(
        "--prompt-cache", choices=("auto", "on", "off"), default="auto",
        help="reuse the prompt's keys and values, computed once per task (default auto: on decoder-only models)",
    )


register_command(Command(
    prog="textpt", name="generate",
    help="generate text for inputs with trained prompts (classifiers: print each label with its probability)",
    configure=_generate_arguments, run=lambda args: TextRecipe().generate(args),
))


# The verbs of modules that import torch, listed in ``textpt --help`` without importing them.
declare_command("textpt", "merge-prompts", "merge single-task prompt folders into a prompt bank", "textpt.mixed")
declare_command("textpt", "serve", "serve text prompts on one frozen backbone over HTTP (Ray Serve; loopback by default)", "promptcore.serving.cli")
declare_command("textpt", "serve-admin", "list, load or unload the prompts of a running server", "promptcore.serving.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``textpt`` console script."""
    from promptcore.cli import main as shared_main

    return shared_main(TextRecipe(), list(sys.argv[1:] if argv is None else argv))


__all__ = ["TextRecipe", "main"]

if __name__ == "__main__":
    sys.exit(main())
