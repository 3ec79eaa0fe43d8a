"""A memory model of prompt tuning: the bytes each GPU holds, per term, computed from a model's shape.

``python -m promptcore.memory_model --model llama-3-8b --gpus 1 2 8 --dtype bf16 int8 nf4 [--fsdp] [--json]``
prints one row per (dtype, FSDP or not, number of GPUs); ``--config path/config.json`` reads a Hugging Face Llama-like
text config or ViT config instead, and ``--vit DEPTH WIDTH MLP_RATIO PATCH IMAGE HEADS`` gives a timm / open_clip ViT
shape. Arithmetic only (no torch): a model of what a run holds, to plan which GPUs a run needs.

The terms, per GPU (``B`` = per-GPU batch, ``S`` = text tokens per example, ``T`` = tokens per example with the prompt
(``S`` + prompt tokens; for a ViT the patches, class token and prompt tokens of a layer), ``a`` = bytes of
an activation: 2 in bf16, int8 and nf4, which compute in bf16; 4 in fp32):

- **weights**: the frozen parameters. The linear layers of the blocks take ``dtype`` (bf16 2 B; int8 1 B plus 5 B per
  output row, torchao's float32 scale and int8 zero point; nf4 0.5 B plus bitsandbytes' block scales, blocksize 64:
  a float32 absmax per block, or with double quantization (the default, as QLoRA) an 8-bit absmax per block plus a
  float32 scale per 256 blocks). Everything else (embeddings, the LM head, norms, biases, the patch embedding) stays
  in bf16, as bitsandbytes and torchao leave it (fp32 when ``dtype`` is fp32). Under FSDP every process holds
  1/``gpus`` of all of it.
- **gathered** (FSDP only): what FSDP2 makes whole on every process during a step. It gathers one block at a time and
  prefetches the next, so two of the largest block; and the root unit (what lies outside the blocks: the input
  embedding, the final norm, the LM head, the patch and position embeddings), which this toolkit gathers whole
  (:func:`promptcore.distributed.shard_model` shards the root as one unit): it is whole when the LM head computes
  the logits and their gradient, the step's peak, whatever ``train.fsdp.reshard_after_forward`` says. Counting
  both is an upper bound of what is gathered at once. ``--sharded-embeddings`` models an FSDP that keeps the root unit sharded
  (vocabulary-parallel embedding, logits and loss), as ``train.fsdp.shard_vocabulary`` does for causal LMs.
- **prompts**: the trained parameters in fp32 (the prompts; for vision also a linear head) with their gradients
  and AdamW's two moments, 16 B per number; whole on every process.
- **activations**: what autograd saves for the backward that carries the gradient to the prompts. The frozen linear
  layers save nothing (their input is needed only for a weight gradient, which no frozen weight gets), so per block
  and token: Llama saves the float32 input of its two RMSNorms (transformers computes them in fp32: ``2 * 4 * H``),
  the attention's query and output and its key and value (``a * (2 H + 2 KV)``; SDPA / flash attention, no
  ``T^2`` term), the MLP's gate, its SiLU and its up projection (``a * 3 I``), and small per-token statistics (the
  norms' inverse RMS, the attention's log-sum-exp per head, in fp32). A ViT block saves its two LayerNorm inputs,
  query, key, value and attention output (``a * 6 D``), the GELU input (``a * M``) and the same small statistics.
  The final norm's input is added once. With gradient checkpointing (``--checkpointing``) each block keeps only its
  input (``a * H``) and one block's saved tensors exist at a time, while it is recomputed in the backward.
- **logits** (text): the causal LM loss over the text (``lm_labels``), as :mod:`textpt` computes it: the logits of
  every position, prompt included, in the model's dtype (``a * B * T * vocab``, saved by the gather that drops the
  prompt positions), the float32 log-softmax of the ``S`` text positions the loss saves, and its float32 gradient
  (``8 * B * S * vocab``). Classification through a verbalizer takes the last position's logits only
  (``B * vocab``): a run that classifies needs far less than this term.
- **overhead**: a constant per GPU: :data:`OVERHEAD_BYTES`.

Left out: transient buffers that live inside one operation (the fp32 copy of the logits inside the loss, the bf16
copy of one linear layer's weight while an int8 / nf4 matmul dequantizes it, attention workspaces), the batch's
input ids, and FSDP's reduce-scatter buffers for the prompt gradients (a few MiB). The model is checked against
measurements at tiny sizes on the CPU (tests/promptcore/test_memory_model.py): weights exactly, the activations
saved for backward within a few percent.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .errors import UserError

GiB = 1024**3

# CUDA context (about 0.5 GiB with torch 2.x on an H100), cuBLAS workspaces and the caching allocator's slack: a
# stated constant, not a measurement.
OVERHEAD_BYTES = 1 * GiB

DTYPES = ("fp32", "bf16", "int8", "nf4")
# Bytes of the tensors that stay in floating point (everything but the blocks' linear weights), and of activations.
FLOAT_BYTES = {"fp32": 4, "bf16": 2, "int8": 2, "nf4": 2}
INT8_ROW_BYTES = 5  # torchao's Int8Tensor: a float32 scale and an int8 zero point per output row
NF4_BLOCK = 64  # bitsandbytes' default blocksize for 4-bit weights
NF4_DOUBLE_QUANT_BLOCK = 256  # double quantization: blocks of absmax values per float32 scale
OPTIMIZER_BYTES = 16  # fp32 parameter, gradient, AdamW's exp_avg and exp_avg_sq


def linear_weight_bytes(rows: int, cols: int, dtype: str, double_quant: bool = True) -> float:
    """Bytes of one linear weight of ``rows`` x ``cols`` stored in ``dtype`` (scales included)."""
    n = rows * cols
    if dtype in ("fp32", "bf16"):
        return n * FLOAT_BYTES[dtype]
    if dtype == "int8":
        return n + rows * INT8_ROW_BYTES
    if dtype == "nf4":
        blocks = n / NF4_BLOCK
        scales = blocks * 1 + blocks / NF4_DOUBLE_QUANT_BLOCK * 4 if double_quant else blocks * 4
        return n / 2 + scales
    raise UserError(f"memory model: unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class TextShape:
    """A Llama-like decoder (Llama, Mistral, Qwen2): the fields of its Hugging Face ``config.json``."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None

    @property
    def blocks(self) -> int:
        return self.layers

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    def block_linears(self) -> list[tuple[int, int]]:
        """(out, in) of each linear layer of one block."""
        h, i = self.hidden, self.intermediate
        return [(self.q_dim, h), (self.kv_dim, h), (self.kv_dim, h), (h, self.q_dim), (i, h), (i, h), (h, i)]

    def block_other_params(self) -> int:
        return 2 * self.hidden  # the two RMSNorm weights

    def root_params(self) -> int:
        """Parameters outside the blocks: the input embedding, the final norm and an untied LM head."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def width(self) -> int:
        return self.hidden

    def block_saved(self, a: int) -> int:
        """Bytes one block saves for backward per token."""
        h = self.hidden
        return 2 * 4 * h + a * (2 * self.q_dim + 2 * self.kv_dim + 3 * self.intermediate) + 4 * (2 + self.heads)

    def final_saved(self, a: int) -> int:
        return 4 * self.hidden + 4  # the final RMSNorm, in fp32

    def logits_saved_bytes(self, batch: int, seq: int, tokens: int, a: int) -> int:
        """The logits of every position in the model's dtype and the float32 log-softmax of the text positions."""
        return batch * self.vocab * (tokens * a + seq * 4)

    def logits_bytes(self, batch: int, seq: int, tokens: int, a: int) -> int:
        """:meth:`logits_saved_bytes` and the log-softmax's float32 gradient."""
        return self.logits_saved_bytes(batch, seq, tokens, a) + batch * seq * self.vocab * 4

    def trained_params(self, prompt_tokens: int, classes: int) -> int:
        return prompt_tokens * self.hidden

    def tokens(self, seq: int, prompt_tokens: int) -> int:
        return seq + prompt_tokens


@dataclass(frozen=True)
class VitShape:
    """A ViT (timm ``VisionTransformer``, open_clip's visual tower) with one class token, trained with VPT-deep."""

    name: str
    depth: int
    width: int
    mlp_ratio: float
    patch: int
    image: int
    heads: int

    @property
    def blocks(self) -> int:
        return self.depth

    @property
    def mlp(self) -> int:
        return int(self.width * self.mlp_ratio)

    def block_linears(self) -> list[tuple[int, int]]:
        d, m = self.width, self.mlp
        return [(3 * d, d), (d, d), (m, d), (d, m)]

    def block_other_params(self) -> int:
        d, m = self.width, self.mlp
        return 4 * d + 3 * d + d + m + d  # two LayerNorms and the linear biases

    def root_params(self) -> int:
        """The patch embedding (a convolution), class token, position embedding and final norm."""
        d, n = self.width, (self.image // self.patch) ** 2
        return 3 * self.patch**2 * d + d + d + (n + 1) * d + 2 * d

    def block_saved(self, a: int) -> int:
        """Bytes one block saves for backward per token."""
        return a * (6 * self.width + self.mlp + 2) + 4 * self.heads

    def final_saved(self, a: int) -> int:
        return a * (self.width + 2)  # the final LayerNorm

    def logits_saved_bytes(self, batch: int, seq: int, tokens: int, a: int) -> int:
        return 0  # batch x classes: nothing

    def logits_bytes(self, batch: int, seq: int, tokens: int, a: int) -> int:
        return 0

    def trained_params(self, prompt_tokens: int, classes: int) -> int:
        return self.depth * prompt_tokens * self.width + self.width * classes + classes

    def tokens(self, seq: int, prompt_tokens: int) -> int:
        return 1 + (self.image // self.patch) ** 2 + prompt_tokens


Shape = TextShape | VitShape

# Built-in shapes, from the published configs:
SHAPES: dict[str, Shape] = {
    # meta-llama/Meta-Llama-3-8B, config.json
    "llama-3-8b": TextShape("llama-3-8b", hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256, tied=False),
    # meta-llama/Meta-Llama-3-70B, config.json
    "llama-3-70b": TextShape("llama-3-70b", hidden=8192, intermediate=28672, layers=80, heads=64, kv_heads=8, vocab=128256, tied=False),
    # timm vit_huge_patch14_224 / open_clip ViT-H-14.json vision_cfg (width 1280, layers 32, head_width 80)
    "vit-h-14": VitShape("vit-h-14", depth=32, width=1280, mlp_ratio=4.0, patch=14, image=224, heads=16),
    # timm vit_giant_patch14_224 (mlp_ratio 48/11) / open_clip ViT-g-14.json vision_cfg (width 1408, layers 40, head_width 88)
    "vit-g-14": VitShape("vit-g-14", depth=40, width=1408, mlp_ratio=48 / 11, patch=14, image=224, heads=16),
}


@dataclass(frozen=True)
class Workload:
    """What one GPU runs per step: ``batch`` examples of ``seq`` text tokens (text) plus ``prompt_tokens`` prompt
    tokens (per layer for VPT-deep), and a head of ``classes`` outputs (vision)."""

    batch: int = 4
    seq: int = 512
    prompt_tokens: int = 20
    classes: int = 100


@dataclass(frozen=True)
class Estimate:
    """The bytes one GPU holds, per term (see the module docstring)."""

    model: str
    dtype: str
    fsdp: bool
    checkpointing: bool
    gpus: int
    weights: float
    gathered: float
    prompts: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.gathered + self.prompts + self.activations + self.logits + self.overhead

    def fits(self, gib: float) -> bool:
        return self.total <= gib * GiB


def activation_bytes(shape: Shape, batch: int, tokens: int, a: int, checkpointing: bool = False) -> int:
    """Bytes saved for the backward of one step: every block's saved tensors, or with gradient checkpointing each
    block's input plus one block's saved tensors while it is recomputed."""
    if checkpointing:
        per_token = shape.blocks * a * shape.width + shape.block_saved(a)
    else:
        per_token = shape.blocks * shape.block_saved(a)
    return batch * tokens * (per_token + shape.final_saved(a))


def weight_bytes(shape: Shape, dtype: str, double_quant: bool = True) -> tuple[float, float, float]:
    """(all frozen weights, one block, the root unit) in bytes, with the blocks' linear weights in ``dtype``."""
    f = FLOAT_BYTES[dtype]
    block = sum(linear_weight_bytes(o, i, dtype, double_quant) for o, i in shape.block_linears()) + f * shape.block_other_params()
    root = f * shape.root_params()
    return shape.blocks * block + root, block, root


def estimate(
    shape: Shape,
    workload: Workload,
    dtype: str,
    gpus: int,
    fsdp: bool,
    checkpointing: bool = False,
    double_quant: bool = True,
    sharded_embeddings: bool = False,
) -> Estimate:
    """The per-GPU memory of prompt tuning ``shape`` on ``gpus`` GPUs: whole copies (one GPU, DDP) or FSDP2
    shards, with or without gradient checkpointing (``train.gradient_checkpointing``). ``sharded_embeddings``
    models FSDP without gathering the root unit whole (vocabulary-parallel embedding and logits), which the toolkit
    does not do yet."""
    if dtype not in DTYPES:
        raise UserError(f"memory model: unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if gpus < 1:
        raise UserError(f"memory model: --gpus must be at least 1, got {gpus}")
    small = [f"{k}={v}" for k, v in asdict(workload).items() if v < (1 if k == "batch" else 0)]
    if small:
        raise UserError(f"memory model: {', '.join(small)}; the batch must be at least 1 and the token and class counts at least 0")
    weights, block, root = weight_bytes(shape, dtype, double_quant)
    a = FLOAT_BYTES[dtype]
    tokens = shape.tokens(workload.seq, workload.prompt_tokens)
    return Estimate(
        model=shape.name,
        dtype=dtype,
        fsdp=fsdp,
        checkpointing=checkpointing,
        gpus=gpus,
        weights=weights / gpus if fsdp else weights,
        gathered=(2 * block + (0 if sharded_embeddings else root)) if fsdp and gpus > 1 else 0.0,
        prompts=OPTIMIZER_BYTES * shape.trained_params(workload.prompt_tokens, workload.classes),
        activations=activation_bytes(shape, workload.batch, tokens, a, checkpointing),
        logits=shape.logits_bytes(workload.batch, workload.seq, tokens, a),
        overhead=OVERHEAD_BYTES,
    )


def read_config(path: str | Path) -> Shape:
    """A shape from a Hugging Face ``config.json``: a Llama-like text model, or a ViT (``model_type: vit``)."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"--config: cannot read {path} ({e.strerror}); give the path of a Hugging Face config.json") from e
    except json.JSONDecodeError as e:
        raise UserError(f"--config: {path} is not JSON ({e}); give the path of a Hugging Face config.json") from e
    cfg = cfg.get("text_config", cfg) if cfg.get("model_type") != "vit" else cfg
    try:
        if cfg.get("model_type") == "vit":
            return VitShape(
                path.parent.name or path.stem, depth=cfg["num_hidden_layers"], width=cfg["hidden_size"],
                mlp_ratio=cfg["intermediate_size"] / cfg["hidden_size"], patch=cfg["patch_size"],
                image=cfg["image_size"], heads=cfg["num_attention_heads"],
            )
        return TextShape(
            path.parent.name or path.stem, hidden=cfg["hidden_size"], intermediate=cfg["intermediate_size"],
            layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
            kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"], vocab=cfg["vocab_size"],
            tied=bool(cfg.get("tie_word_embeddings", False)), head_dim=cfg.get("head_dim"),
        )
    except KeyError as e:
        raise UserError(
            f"--config: {path} has no {e.args[0]!r}; the memory model reads Llama-like text configs (hidden_size, "
            f"intermediate_size, num_hidden_layers, num_attention_heads, vocab_size) and ViT configs (model_type: vit)"
        ) from None


def table(estimates: Sequence[Estimate]) -> str:
    """A Markdown table of ``estimates``, GiB per term."""
    head = "| model | dtype | FSDP | checkpointing | GPUs | weights | gathered | prompts | activations | logits | overhead | total GiB | fits 24 GiB | fits 80 GiB |"
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for e in estimates:
        terms = [e.weights, e.gathered, e.prompts, e.activations, e.logits, e.overhead, e.total]
        rows.append(
            f"| {e.model} | {e.dtype} | {'yes' if e.fsdp else 'no'} | {'yes' if e.checkpointing else 'no'} | {e.gpus} | "
            + " | ".join(f"{t / GiB:.2f}" for t in terms)
            + f" | {'yes' if e.fits(24) else 'no'} | {'yes' if e.fits(80) else 'no'} |"
        )
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m promptcore.memory_model", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", nargs="+", metavar="NAME", help=f"built-in shapes: {', '.join(SHAPES)}")
    source.add_argument("--config", metavar="PATH", help="a Hugging Face config.json (Llama-like text model or ViT)")
    source.add_argument("--vit", nargs=6, type=float, metavar=("DEPTH", "WIDTH", "MLP_RATIO", "PATCH", "IMAGE", "HEADS"), help="a timm / open_clip ViT shape")
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2, 8])
    parser.add_argument("--dtype", nargs="+", default=["bf16", "int8", "nf4"], help=f"frozen weights: {', '.join(DTYPES)}")
    parser.add_argument("--fsdp", action="store_true", help="also the FSDP rows (without it: whole copies only)")
    parser.add_argument("--checkpointing", action="store_true", help="with gradient checkpointing (train.gradient_checkpointing)")
    parser.add_argument("--sharded-embeddings", action="store_true", help="FSDP without gathering the embedding / LM head whole (not in the toolkit yet)")
    parser.add_argument("--batch", type=int, default=Workload.batch, help="examples per GPU")
    parser.add_argument("--seq", type=int, default=Workload.seq, help="text tokens per example (text models)")
    parser.add_argument("--prompt-tokens", type=int, default=Workload.prompt_tokens, help="prompt tokens (per layer for ViTs, VPT-deep)")
    parser.add_argument("--classes", type=int, default=Workload.classes, help="outputs of the trained head (ViTs)")
    parser.add_argument("--no-double-quant", action="store_true", help="nf4 with a float32 absmax per block")
    parser.add_argument("--json", action="store_true", help="one JSON object per row instead of the table")
    return parser.parse_args(argv)


def shapes_of(args: argparse.Namespace) -> list[Shape]:
    if args.config:
        return [read_config(args.config)]
    if args.vit:
        depth, width, ratio, patch, image, heads = args.vit
        if not all(v.is_integer() and v >= 1 for v in (depth, width, patch, image, heads)) or ratio <= 0:
            raise UserError(
                f"--vit: got {' '.join(f'{v:g}' for v in args.vit)}; DEPTH, WIDTH, PATCH, IMAGE and HEADS are positive whole "
                f"numbers and MLP_RATIO is positive (ViT-H/14: --vit 32 1280 4 14 224 16)"
            )
        return [VitShape("vit", depth=int(depth), width=int(width), mlp_ratio=ratio, patch=int(patch), image=int(image), heads=int(heads))]
    unknown = [n for n in args.model if n not in SHAPES]
    if unknown:
        raise UserError(f"--model: unknown {', '.join(unknown)}; built-in shapes are {', '.join(SHAPES)} (or use --config / --vit)")
    return [SHAPES[n] for n in args.model]


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: prints the table (or JSON rows); a bad argument prints one ``error:`` line and returns 2."""
    args = parse_args(argv)
    try:
        workload = Workload(batch=args.batch, seq=args.seq, prompt_tokens=args.prompt_tokens, classes=args.classes)
        estimates = [
            estimate(shape, workload, dtype, gpus, fsdp, args.checkpointing, not args.no_double_quant, args.sharded_embeddings)
            for shape in shapes_of(args)
            for dtype in args.dtype
            for fsdp in ([False, True] if args.fsdp else [False])
            for gpus in args.gpus
            if not (fsdp and gpus == 1)  # FSDP over one process holds what one whole copy holds
        ]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        for e in estimates:
            print(json.dumps({**asdict(e), "total": e.total}))
    else:
        print(table(estimates))
    return 0


__all__ = ["DTYPES", "activation_bytes", "Estimate", "OVERHEAD_BYTES", "SHAPES", "TextShape", "VitShape", "Workload", "estimate", "linear_weight_bytes", "main", "read_config", "table", "weight_bytes"]

if __name__ == "__main__":
    sys.exit(main())
