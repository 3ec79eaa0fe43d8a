"""``vpt`` command line: ``vpt train | eval | predict | sweep`` (also ``python -m vpt``).

``train`` and ``eval`` come from the shared CLI (:func:`promptcore.cli.main`); this module is the vision recipe
it runs (how to build the model and the data from a :class:`vpt.run_config.VisionRunConfig`) plus ``predict`` and
``sweep`` (:func:`promptcore.sweep.run_sweep` on the config's ``sweep:`` grid)::

    vpt train -c configs/smoke/vpt_tiny.yaml --set train.epochs=2 -o runs/tiny
    vpt eval -c configs/smoke/vpt_tiny.yaml --prompts runs/tiny/best
    vpt predict -c configs/smoke/vpt_tiny.yaml --prompts runs/tiny/best photos/ cat.jpg --top-k 3
    vpt predict --prompts runs/tiny/best photos/        # the model rebuilt from the prompt folder alone
    vpt sweep -c configs/vpt/vtab1k/vpt_deep.yaml --seeds 42 -o runs/sweep   # the preset's lr x wd grid
    vpt base2new | interpret ...     # the CLIP methods' verbs (registered by the vpt.clip plugin)

Everything here is a few calls a user can make in Python: ``create_model``, ``wrap``, ``build_vision_data``.

The module imports no torch (``vpt --help`` and each verb's help come without it): the recipe imports what a verb
needs when the verb runs. The verbs registered by modules that import torch are declared here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from promptcore.cli import EXIT_ERROR, Command, add_config_args, declare_command, default_run_dir, register_command
from promptcore.cli import main as shared_main
from promptcore.errors import MissingFileError, UserError
from promptcore.plugins import Deferred

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

    from promptcore import PromptedModel
    from promptcore.recipe import DataBundle

    from .data import ImageConfig, LabeledImages, VisionDataConfig
    from .run_config import VisionRunConfig

PREDICT_BATCH_SIZE = 32
"""Images per forward of ``vpt predict`` without a run config (with one: its eval batch size)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_paths(items: Sequence[str]) -> list[Path]:
    """Image files named by ``items``: files as given, folders searched recursively for image suffixes (sorted).

    Raises:
        FileNotFoundError: a path that does not exist, or folders holding no images.
    """
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise MissingFileError(f"folder {item!r} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise MissingFileError(f"image {item!r} does not exist; give image files or folders of images")
    return paths


def open_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB; a file that cannot be read (not an image, empty, truncated, over PIL's
    decompression-bomb limit) gets a clear error naming it."""
    from PIL import Image, UnidentifiedImageError

    from .data import UNREADABLE, DataError, to_rgb

    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file PIL can read") from None
    except UNREADABLE as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {e})") from None


class VisionRecipe:
    """The ``vpt`` recipe for :func:`promptcore.cli.main`.

    It builds the backbone once per model section (reading it resolves the config, then it is wrapped) and keeps
    the data sources it loaded to count classes, so :meth:`build_data` does not load them again.
    """

    prog = "vpt"
    config_class = Deferred("vpt.run_config", "VisionRunConfig")

    def __init__(self) -> None:
        self._sources: dict[str, tuple[LabeledImages, LabeledImages | None]] = {}
        self._backbones: dict[str, nn.Module] = {}

    def sources(self, cfg: VisionRunConfig, image_config: ImageConfig) -> tuple[LabeledImages, LabeledImages | None]:
        """The run's data sources (loaded once per data config)."""
        from .data import load_sources

        key = repr(cfg.data)
        if key not in self._sources:
            self._sources[key] = load_sources(cfg.data, image_config)
        return self._sources[key]

    def backbone(self, cfg: VisionRunConfig) -> nn.Module:
        """The run's backbone, built once per model section; :meth:`build_model` takes it."""
        from .backbones import create_model

        key = repr(cfg.model)
        if key not in self._backbones:
            self._backbones[key] = create_model(cfg.model)
        return self._backbones[key]

    def resolve_config(self, cfg: VisionRunConfig) -> VisionRunConfig:
        """``cfg`` with the values its prompt config leaves to the data filled in (:func:`resolve_run_config`)."""
        from .data import resolve_image_config
        from .run_config import resolve_run_config

        backbone = self.backbone(cfg)
        return resolve_run_config(
            cfg, backbone, lambda: self.sources(cfg, resolve_image_config(backbone, cfg.data.image_size))[0]
        )

    def build_model(self, cfg: VisionRunConfig) -> PromptedModel:
        """The backbone by name, wrapped with the prompt config as :meth:`resolve_config` completes it.

        Its prompt files record the model section and the seed (the run's, with which a random backbone was built
        right after seeding), so :func:`vpt.serving.load_prompted` rebuilds the backbone from the folder alone."""
        from promptcore import wrap

        from .serving import record_backbone

        cfg = self.resolve_config(cfg)
        model = wrap(self._backbones.pop(repr(cfg.model)), cfg.prompt)
        record_backbone(model, cfg.model, cfg.train.seed)
        return model

    def config_for_prompts(self, cfg: VisionRunConfig, prompt_config: dict[str, Any], directory: str) -> VisionRunConfig:
        """``cfg`` with the preprocessing the prompts in ``directory`` were trained with, where ``cfg.data`` leaves
        it unset (:func:`vpt.data.with_recorded_preprocessing`): ``vpt eval`` and ``vpt predict`` preprocess images
        as training did; and, for the random backbone the prompts were trained on, the seed it was built with
        (:func:`promptcore.recipe.with_recorded_seed`)."""
        from promptcore.recipe import with_recorded_seed

        from .data import with_recorded_preprocessing

        data = with_recorded_preprocessing(cfg.data, prompt_config.get("preprocessing") or {}, directory)
        cfg = cfg if data is cfg.data else dataclasses.replace(cfg, data=data)
        same_backbone = cfg.model.random_weights and (prompt_config.get("model") or {}).get("name") == cfg.model.name
        return with_recorded_seed(cfg, prompt_config.get("backbone_seed") if same_backbone else None, f"prompt folder {directory}")

    def build_data(self, cfg: VisionRunConfig, model: PromptedModel) -> DataBundle:
        """Train/eval datasets with the backbone's transforms and the data section's overrides, labels checked
        against the model's classes.

        The model's prompt files will record what the data determined, so ``vpt eval`` and ``vpt predict`` need not
        load the data to know it: the data section's preprocessing (:func:`vpt.data.preprocessing_overrides`) and,
        when the model's own prompt config names no classes (pixel prompts, the linear probe), the class names.
        """
        from .data import build_vision_data, preprocessing_overrides, resolve_image_config

        image_config = resolve_image_config(model.backbone, cfg.data.image_size)
        known = model.prompt_config()
        bundle = build_vision_data(cfg.data, image_config, known.get("num_classes"), self.sources(cfg, image_config))
        model.record_in_prompt_files(preprocessing=preprocessing_overrides(cfg.data))
        if not known.get("class_names"):
            model.record_in_prompt_files(class_names=bundle.class_names)
        return bundle

    def class_names(self, cfg: VisionRunConfig, model: PromptedModel, prompt_meta: dict[str, Any]) -> list[str]:
        """Class names for ``predict``: the prompt folder's, the prompt config's (CLIP), else the data's."""
        from .data import class_names_of, infer_num_classes, resolve_image_config

        for names in (prompt_meta.get("class_names"), getattr(cfg.prompt, "class_names", None), cfg.data.class_names):
            if names:
                return list(names)
        train = self.sources(cfg, resolve_image_config(model.backbone, cfg.data.image_size))[0]
        return class_names_of(cfg.data, train, int(model.prompt_config().get("num_classes") or infer_num_classes(cfg.data, train)))

    def predict(self, args: argparse.Namespace) -> int:
        """``vpt predict``: prints each image's path, then its top-k labels with probabilities.

        Without ``-c``, the model is rebuilt from the prompt folder alone (:func:`vpt.serving.load_prompted`: its
        method config, backbone, class names and preprocessing). An image that cannot be read is named in an
        ``error:`` line on stderr and the others are still predicted; the exit status is then 2."""
        from promptcore import read_prompt_config
        from promptcore.trainer import seed_everything

        from .data import VisionDataConfig, with_recorded_preprocessing
        from .run_config import load_run_config
        from .serving import load_prompted

        if args.top_k <= 0:
            raise UserError(f"--top-k must be positive, got {args.top_k}")
        paths = image_paths(args.images)
        if args.config is None:
            if args.overrides:
                raise UserError("--set changes a run config; give it with -c CONFIG (without -c the prompt folder alone is read)")
            model = load_prompted(args.prompts)
            meta = read_prompt_config(args.prompts)
            data = with_recorded_preprocessing(VisionDataConfig(), meta.get("preprocessing") or {}, args.prompts)
            names = list(meta.get("class_names") or [str(i) for i in range(int(meta.get("num_classes") or 0))])
            return self._predict_images(args, model, names, data, PREDICT_BATCH_SIZE, paths)
        cfg = load_run_config(args.config, args.overrides)
        meta = read_prompt_config(args.prompts)
        cfg = self.config_for_prompts(cfg, meta, args.prompts)
        # The head size and class names the prompts were trained with: no data needs loading to know them.
        fields = {f.name for f in dataclasses.fields(cfg.prompt)}
        known = {k: meta[k] for k in ("num_classes", "class_names") if k in fields and getattr(cfg.prompt, k) is None and meta.get(k)}
        if known:
            cfg = dataclasses.replace(cfg, prompt=dataclasses.replace(cfg.prompt, **known))
        seed_everything(cfg.train.seed)  # as train and eval do: a backbone built without weights is the same one
        model = self.build_model(cfg)
        model.load_prompts(args.prompts)
        model.eval()
        names = self.class_names(cfg, model, meta)
        return self._predict_images(args, model, names, cfg.data, cfg.train.eval_batch_size or cfg.train.batch_size, paths)

    def _predict_images(
        self,
        args: argparse.Namespace,
        model: PromptedModel,
        names: list[str],
        data: VisionDataConfig,
        batch_size: int,
        paths: list[Path],
    ) -> int:
        """Prints the top-k labels of each image of ``paths`` (``predict``'s output) with a ready model (eval mode),
        preprocessed as ``data`` says."""
        import torch

        from .data import DataError, build_transform, resolve_image_config, with_data_overrides

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        transform = build_transform(with_data_overrides(resolve_image_config(model.backbone, data.image_size), data))
        k = min(args.top_k, len(names))
        failed = 0
        for start in range(0, len(paths), batch_size):
            chunk, images = [], []
            for path in paths[start : start + batch_size]:
                try:
                    images.append(transform(open_image(path)))
                    chunk.append(path)
                except DataError as e:
                    print(f"error: {e}", file=sys.stderr)
                    failed += 1
            if not chunk:
                continue
            pixels = torch.stack(images).to(device)
            task_ids = torch.full((len(chunk),), args.task, dtype=torch.long, device=device)
            with torch.no_grad():
                probs = model.forward_batch({"pixel_values": pixels, "task_ids": task_ids}).float().softmax(-1)
            top = probs.topk(k, dim=-1)
            for path, values, indices in zip(chunk, top.values.tolist(), top.indices.tolist()):
                print(path)
                for rank, (p, c) in enumerate(zip(values, indices), 1):
                    print(f"  {rank}. {names[c]}  {p:.4f}")
        if failed:
            print(f"predict: {failed} of {len(paths)} images could not be read (named above); the others are predicted", file=sys.stderr)
            return EXIT_ERROR
        return 0


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p, required=False)
    p.add_argument("--prompts", required=True, help="prompt folder (a run's best/ or last/)")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--top-k", type=int, default=5, help="labels to print per image (default 5)")
    p.add_argument("--task", type=int, default=0, help="task id of a prompt bank (default 0)")


register_command(Command(
    prog="vpt", name="predict", help="print the top-k labels of images with trained prompts",
    configure=_predict_arguments, run=lambda args: VisionRecipe().predict(args),
))


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=[V1, V2]",
        help="values to try, e.g. --grid 'train.lr=[0.1, 0.5]' (repeatable; replaces the config's sweep: mapping)",
    )
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="train.seed of each point's runs (default: the config's)")
    p.add_argument(
        "-o", "--output", metavar="DIR",
        help="folder of the runs and of sweep.json / sweep.md (default: runs/vpt-sweep-<config>-<time>)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace runs already in DIR")


def _sweep(args: argparse.Namespace) -> int:
    from promptcore.sweep import format_sweep, parse_grid, run_sweep

    output = Path(args.output) if args.output else default_run_dir(VisionRecipe(), args.config, "sweep")
    result = run_sweep(VisionRecipe(), args.config, args.overrides, parse_grid(args.grid) or None, args.seeds, output, args.overwrite)
    print(format_sweep(result), end="")
    print("best: " + (" ".join(f"--set {o}" for o in result["best"]["overrides"]) or "the config's own values"))
    print(f"sweep: runs and sweep.json / sweep.md written to {output}", file=sys.stderr)
    return 0


register_command(Command(
    prog="vpt", name="sweep", help="train one run per point of a grid (the config's sweep: mapping) and seed, and rank them",
    configure=_sweep_arguments, run=_sweep,
))


# The verbs of modules that import torch, listed in ``vpt --help`` without importing them.
declare_command(
    "vpt", "merge-prompts", "merge single-task prompt folders into one prompt bank (task t = folder t)", "vpt.serving",
)
declare_command("vpt", "serve", "serve vision prompts on one frozen backbone over HTTP (Ray Serve; loopback by default)", "promptcore.serving.cli")
declare_command("vpt", "serve-admin", "list, load or unload the prompts of a running server", "promptcore.serving.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vpt`` console script (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    return shared_main(VisionRecipe(), argv)


if __name__ == "__main__":
    sys.exit(main())
