"""``vlmpt`` command line: ``vlmpt train | eval | generate`` (also ``python -m vlmpt``).

``train`` and ``eval`` come from the shared CLI (:func:`promptcore.cli.main`); this module is the vision-language
recipe it runs (how to build the model, processor and data from a :class:`vlmpt.run_config.VLMRunConfig`) plus
``generate``::

    vlmpt train -c configs/smoke/vlmpt_tiny.yaml -o runs/vlm
    vlmpt eval -c configs/smoke/vlmpt_tiny.yaml --prompts runs/vlm/best
    vlmpt generate -c configs/smoke/vlmpt_tiny.yaml --prompts runs/vlm/best photo.png --question "what colour is it ?"

Everything here is a few calls a user can make in Python: ``vlmpt.load_model_and_processor``, ``promptcore.wrap``,
``vlmpt.build_vlm_data``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from promptcore.cli import Command, add_config_args, load_prompts_option, register_command
from promptcore.errors import UserError
from promptcore.plugins import Deferred

# The module imports no torch (``vlmpt --help`` comes without it): the recipe imports what a verb needs when it runs.
if TYPE_CHECKING:
    from promptcore.recipe import DataBundle

    from .model import VLMPromptedModel
    from .run_config import VLMRunConfig


def images_of(batch: dict) -> dict:
    """The image inputs of a batch (what is not text)."""
    return {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}


class VLMRecipe:
    """The ``vlmpt`` recipe for :func:`promptcore.cli.main`."""

    prog = "vlmpt"
    config_class = Deferred("vlmpt.run_config", "VLMRunConfig")

    def config_for_prompts(self, cfg: VLMRunConfig, prompt_config: dict, directory: str) -> VLMRunConfig:
        """``cfg`` with the seed the prompts in ``directory`` were trained with when they were trained on the
        config's ``random:`` backbone (:func:`promptcore.recipe.with_recorded_seed`), so ``vlmpt eval`` and
        ``vlmpt generate`` rebuild the weights the prompts were trained on."""
        from promptcore.recipe import with_recorded_seed

        same_backbone = cfg.model.name.startswith("random:") and (prompt_config.get("model") or {}).get("name") == cfg.model.name
        return with_recorded_seed(cfg, prompt_config.get("seed") if same_backbone else None, f"prompt folder {directory}")

    def build_model(self, cfg: VLMRunConfig) -> VLMPromptedModel:
        """The frozen model wrapped with ``cfg.prompt`` (``model.checkpoint``'s prompts loaded when set); its
        processor is the model's ``processor`` attribute and its ``answer_scorer`` scores as ``task`` says.
        Prompt folders record what rebuilds the model and its inputs: the ``model`` section, the seed of a random
        backbone, the method's config and the data's ``template`` and columns."""
        from promptcore import wrap
        from promptcore.config import to_dict

        from .answers import AnswerScorer, ClassScorer
        from .data import class_names_of
        from .loading import load_model_and_processor

        backbone, processor = load_model_and_processor(cfg.model, cfg.train.seed)
        model = wrap(backbone, cfg.prompt, name=cfg.model.name)
        model.processor = processor
        if cfg.task.type == "classify":
            model.answer_scorer = ClassScorer(processor.tokenizer, class_names_of(cfg.data, cfg.task.class_names))
        else:
            model.answer_scorer = AnswerScorer(processor.tokenizer, cfg.task.max_new_tokens)
        if cfg.model.checkpoint is not None:
            model.load_prompts(cfg.model.checkpoint)
        data = cfg.data
        model.record_in_prompt_files(
            model={k: v for k, v in to_dict(cfg.model).items() if k != "checkpoint"},
            seed=cfg.train.seed,
            method_config=to_dict(cfg.prompt),
            task=to_dict(cfg.task),
            inputs={"template": data.template, "image_column": data.image_column, "question_column": data.question_column, "answer_column": data.answer_column},
        )
        return model

    def build_data(self, cfg: VLMRunConfig, model: VLMPromptedModel) -> DataBundle:
        """Train and eval examples through the model's processor (:func:`vlmpt.data.build_vlm_data`)."""
        from .answers import ClassScorer
        from .data import build_vlm_data

        scorer = model.answer_scorer
        return build_vlm_data(cfg.data, model.processor, scorer.class_names if isinstance(scorer, ClassScorer) else None)

    def generate(self, args: argparse.Namespace) -> int:
        """``vlmpt generate``: prints each image, then the answer written for it (``classify``: each class with
        its probability, best first)."""
        import torch

        from promptcore import load_config, read_prompt_config
        from promptcore.trainer import seed_everything

        from .answers import ClassScorer
        from .data import VLMEncoder, collate_examples, load_image
        from .run_config import VLMRunConfig

        if args.max_new_tokens is not None and args.max_new_tokens <= 0:
            raise UserError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
        cfg = load_config(VLMRunConfig, args.config, args.overrides)
        if args.prompts is not None:
            cfg = self.config_for_prompts(cfg, read_prompt_config(args.prompts), args.prompts)  # a missing folder fails here
        seed_everything(cfg.train.seed)
        model = self.build_model(cfg)
        load_prompts_option(model, args.prompts)
        model.eval()
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        encoder = VLMEncoder(model.processor, cfg.data)
        row = {} if cfg.data.question_column is None or args.question is None else {cfg.data.question_column: args.question}
        instruction = encoder.instruction(row, "--question")
        examples = [encoder.prompt(load_image(path, Path("."), f"image {path}"), instruction) for path in args.images]
        batch = collate_examples(examples, model.processor.tokenizer.padding_side, encoder.tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        scorer = model.answer_scorer
        if isinstance(scorer, ClassScorer):
            probs = model.class_scores(batch["input_ids"], batch["attention_mask"], scorer.class_ids, **images_of(batch)).softmax(-1)
            for i, path in enumerate(args.images):
                print(f"[{i + 1}] {path}")
                for c in probs[i].argsort(descending=True).tolist():
                    print(f"    {scorer.class_names[c]}  {probs[i, c]:.4f}")
            return 0
        new = model.generate(args.max_new_tokens or scorer.max_new_tokens, scorer.eos_token_id, **batch)
        for i, (path, answer) in enumerate(zip(args.images, scorer.decode(new))):
            print(f"[{i + 1}] {path}")
            print(f"    {answer}")
        return 0


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Each image goes through the config's chat template with the question (the data template's question "
        "field), as training inputs did; the model writes the answer."
    )
    add_config_args(p)
    p.add_argument("--prompts", help="prompt folder (a run's best/ or last/)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--question", help="the question asked of every image (the template's question field)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate per image (default: task.max_new_tokens)")


register_command(Command(
    prog="vlmpt", name="generate", help="answer questions about images (or caption them) with trained prompts",
    configure=_generate_arguments, run=lambda args: VLMRecipe().generate(args),
))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlmpt`` console script."""
    from promptcore.cli import main as shared_main

    return shared_main(VLMRecipe(), list(sys.argv[1:] if argv is None else argv))


__all__ = ["VLMRecipe", "main"]

if __name__ == "__main__":
    sys.exit(main())
