"""``vlmpt`` command line: ``vlmpt train | eval | generate | export-peft | serve`` (also ``python -m vlmpt``).

``train`` and ``eval`` come from the shared CLI (:func:`promptcore.cli.main`); this module is the vision-language
recipe it runs (how to build the model, processor and data from a :class:`vlmpt.run_config.VLMRunConfig`) plus
``generate`` and ``export-peft``::

    vlmpt train -c configs/smoke/vlmpt_tiny.yaml -o runs/vlm
    vlmpt eval -c configs/smoke/vlmpt_tiny.yaml --prompts runs/vlm/best
    vlmpt eval --prompts runs/vlm/best
    vlmpt generate -c configs/smoke/vlmpt_tiny.yaml --prompts runs/vlm/best photo.png --question "what colour is it ?"
    vlmpt generate --prompts runs/vlm/best photo.png --question "what colour is it ?"
    vlmpt export-peft --prompts runs/vlm/best -o adapters/vlm

Everything here is a few calls a user can make in Python: ``vlmpt.load_model_and_processor``, ``promptcore.wrap``,
``vlmpt.build_vlm_data``, ``vlmpt.load_prompted``, ``vlmpt.answer`` and ``vlmpt.peft_export.save_peft_adapter``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Sequence

from promptcore.cli import Command, add_config_args, declare_command, load_prompts_option, register_command
from promptcore.errors import UserError
from promptcore.plugins import Deferred

# The module imports no torch (``vlmpt --help`` comes without it): the recipe imports what a verb needs when it runs.
if TYPE_CHECKING:
    from promptcore.recipe import DataBundle

    from .model import VLMPromptedModel
    from .run_config import VLMRunConfig


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

    def config_from_prompts(self, directory: str, overrides: Sequence[str] = ()) -> VLMRunConfig:
        """The run config ``vlmpt eval --prompts DIR`` without ``-c`` evaluates with: the ``model``, ``data`` and
        ``task`` sections, the method's config and the seed the folder records, and the batch size and metric
        training evaluated with; then the ``--set`` overrides (``data.eval_split=validation``, ``train.batch_size=8``).

        Raises:
            PromptFileError: the folder is missing or corrupt, or records no model, data or task section (not
                written by ``vlmpt train``, or written before prompt folders recorded the data section).
        """
        from promptcore import PromptFileError, load_config, read_prompt_config

        from .run_config import VLMRunConfig

        meta = read_prompt_config(directory)
        missing = [key for key in ("model", "method_config", "data", "task") if not isinstance(meta.get(key), dict)]
        if missing:
            raise PromptFileError(
                f"prompt folder {directory} records no {', '.join(missing)} section (it was not written by 'vlmpt "
                f"train', or by a version that did not record them); run 'vlmpt eval -c CONFIG --prompts {directory}' "
                f"with the training config"
            )
        train = {**(meta.get("evaluation") or {}), "seed": int(meta.get("seed", 0))}
        sections = {"model": meta["model"], "prompt": meta["method_config"], "data": meta["data"], "task": meta["task"], "train": train}
        return load_config(VLMRunConfig, sections, overrides)

    def build_model(self, cfg: VLMRunConfig) -> VLMPromptedModel:
        """The frozen model wrapped with ``cfg.prompt`` (``model.checkpoint``'s prompts loaded when set); its
        processor is the model's ``processor`` attribute and its ``answer_scorer`` scores as ``task`` says.
        Prompt folders record what rebuilds the model and its inputs (:func:`vlmpt.load_prompted`): the ``model``
        section, the seed of a random backbone, the method's config, the task with its class words and the data's
        ``template``, columns and ``max_length`` (``inputs``), the whole ``data`` section and the batch size and
        metric of evaluation (what ``vlmpt eval --prompts DIR`` without ``-c`` reads, :meth:`config_from_prompts`)."""
        from promptcore import wrap
        from promptcore.config import to_dict

        from .data import class_names_of
        from .inference import INPUT_KEYS, prepare_for_inference
        from .loading import load_model_and_processor

        backbone, processor = load_model_and_processor(cfg.model, cfg.train.seed)
        model = wrap(backbone, cfg.prompt, name=cfg.model.name)
        class_names = class_names_of(cfg.data, cfg.task.class_names) if cfg.task.type == "classify" else None
        prepare_for_inference(model, processor, cfg.task, cfg.data, class_names)
        if cfg.model.checkpoint is not None:
            model.load_prompts(cfg.model.checkpoint)
        data = to_dict(cfg.data)
        model.record_in_prompt_files(
            model={k: v for k, v in to_dict(cfg.model).items() if k != "checkpoint"},
            seed=cfg.train.seed,
            method_config=to_dict(cfg.prompt),
            task={**to_dict(cfg.task), "class_names": class_names},
            inputs={k: data[k] for k in INPUT_KEYS},
            data=data,
            evaluation={"batch_size": cfg.train.eval_batch_size or cfg.train.batch_size, "metric": cfg.train.metric, "metric_mode": cfg.train.metric_mode},
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
        its probability, best first). Without ``-c``, the model is rebuilt from the prompt folder alone
        (:func:`vlmpt.load_prompted`)."""
        import torch

        from .answers import ClassScorer
        from .inference import answer, classify

        if args.max_new_tokens is not None and args.max_new_tokens <= 0:
            raise UserError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
        model = self.prompted_model(args)
        model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        scorer = model.answer_scorer
        if isinstance(scorer, ClassScorer):
            probs = classify(model, args.images, args.question)
            for i, path in enumerate(args.images):
                print(f"[{i + 1}] {path}")
                for c in probs[i].argsort(descending=True).tolist():
                    print(f"    {scorer.class_names[c]}  {probs[i, c]:.4f}")
            return 0
        for i, (path, text) in enumerate(zip(args.images, answer(model, args.images, args.question, args.max_new_tokens))):
            print(f"[{i + 1}] {path}")
            print(f"    {text}")
        return 0


    def prompted_model(self, args: argparse.Namespace) -> VLMPromptedModel:
        """The model with the prompts of ``--prompts`` loaded (eval mode): rebuilt from the prompt folder alone
        without ``-c`` (:func:`vlmpt.load_prompted`), else from the run config (with the seed the folder records)."""
        from promptcore import load_config, read_prompt_config
        from promptcore.trainer import seed_everything

        from .inference import load_prompted
        from .run_config import VLMRunConfig

        if args.config is None:
            if args.prompts is None:
                raise UserError("give the prompt folder with --prompts DIR (a run's best/ or last/), or a run config with -c CONFIG")
            if args.overrides:
                raise UserError("--set changes a run config; give it with -c CONFIG (without -c the prompt folder alone is read)")
            return load_prompted(args.prompts)
        cfg = load_config(VLMRunConfig, args.config, args.overrides)
        if args.prompts is not None:
            cfg = self.config_for_prompts(cfg, read_prompt_config(args.prompts), args.prompts)  # a missing folder fails here
        seed_everything(cfg.train.seed)
        model = self.build_model(cfg)
        load_prompts_option(model, args.prompts)
        return model.eval()

    def export_peft(self, args: argparse.Namespace) -> int:
        """``vlmpt export-peft``: writes the prompt folder's ``vlm_prompt_tuning`` prompt as a PEFT adapter folder
        (:func:`vlmpt.peft_export.save_peft_adapter`) and prints its path."""
        from .peft_export import save_peft_adapter

        if args.prompts is None:
            raise UserError("give the prompt folder to export with --prompts DIR (a run's best/ or last/)")
        print(save_peft_adapter(self.prompted_model(args), args.output, args.base_model))
        return 0


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Each image goes through the chat template with the question (the data template's question field), as "
        "training inputs did; the model writes the answer. The config is optional: a prompt folder written by "
        "'vlmpt train' records the model, task and template."
    )
    add_config_args(p, required=False)
    p.add_argument("--prompts", help="prompt folder (a run's best/ or last/); without -c, the model, task and template it records are used")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--question", help="the question asked of every image (the template's question field)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate per image (default: task.max_new_tokens)")


register_command(Command(
    prog="vlmpt", name="generate", help="answer questions about images (or caption them) with trained prompts",
    configure=_generate_arguments, run=lambda args: VLMRecipe().generate(args),
))


def _export_peft_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Writes a vlm_prompt_tuning prompt as a PEFT PROMPT_TUNING adapter (CAUSAL_LM) for the whole model, which "
        "peft.PeftModel.from_pretrained loads. Refused for Qwen2-VL, Qwen2.5-VL and PaliGemma, where PEFT's own "
        "result is wrong (docs/vlm.md). The config is optional, as for generate."
    )
    add_config_args(p, required=False)
    p.add_argument("--prompts", help="prompt folder (a run's best/ or last/); without -c, the model it records is built")
    p.add_argument("-o", "--output", required=True, metavar="ADAPTER_DIR", help="the adapter folder to write (replaced)")
    p.add_argument("--base-model", help="base_model_name_or_path of the adapter config (default: the model's name)")


register_command(Command(
    prog="vlmpt", name="export-peft", help="write a vlm_prompt_tuning prompt as a PEFT prompt-tuning adapter",
    configure=_export_peft_arguments, run=lambda args: VLMRecipe().export_peft(args),
))


declare_command("vlmpt", "serve", "serve vision-language prompts on one frozen backbone over HTTP (Ray Serve; loopback by default)", "promptcore.serving.cli")
declare_command("vlmpt", "serve-admin", "list, load or unload the prompts of a running server", "promptcore.serving.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlmpt`` console script."""
    from promptcore.cli import main as shared_main

    return shared_main(VLMRecipe(), list(sys.argv[1:] if argv is None else argv))


__all__ = ["VLMRecipe", "main"]

if __name__ == "__main__":
    sys.exit(main())
