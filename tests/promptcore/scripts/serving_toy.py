"""A toy serving backend for the prompt server's tests and bench: a tiny frozen torch model, per-prompt tensors.

Texts (kind ``text``) are their characters' codes; images (kind ``vision``) are bytes starting with ``IMG``, a pixel
per further byte. A prompt folder holds ``prompt`` (``[P, D]``, any P) and, for a classifier, ``head`` (``[C, D]``,
any C); a prompt without a head generates letters. One batch mixes prompts of different lengths and class counts:
rows are padded, and a key mask keeps the padding out of every row's mean, so a row's answer equals its answer alone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch

from promptcore.errors import UserError
from promptcore.files import PromptFileError, load_prompt_files, save_prompt_files
from promptcore.serving import Classification, GenerationStep, LimitError, Limits, PromptInfo, Request

GATE_S = 60.0  # a batch held by a test that failed before releasing it fails after this long, never hangs
VOCAB = 26  # generated tokens: 'a'..'z'; 'z' ends a sequence
STOP_TOKEN = VOCAB - 1


@dataclass
class ToyPrompt:
    info: PromptInfo
    prompt: torch.Tensor
    head: torch.Tensor | None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    moves: int = 0

    def to(self, device: torch.device) -> "ToyPrompt":
        self.prompt = self.prompt.to(device)
        self.head = self.head.to(device) if self.head is not None else None
        self.device, self.moves = torch.device(device), self.moves + 1
        return self


class ToyBackend:
    """The frozen model: an embedding of 128 character codes, a tanh layer over the masked mean, an output layer."""

    kind: ClassVar[str] = "text"

    def __init__(self, dim: int = 8, seed: int = 0, device: torch.device = torch.device("cpu"), limits: Limits = Limits(),
                 dtype: torch.dtype = torch.float32) -> None:
        g = torch.Generator().manual_seed(seed)
        self.dim, self.dtype = dim, dtype
        self.name = f"toy-{dim}"
        self.fingerprint = f"toy-seed-{seed}"
        self.device = torch.device(device)
        self.limits = limits
        self.embed = torch.randn(128, dim, generator=g, dtype=dtype).to(self.device)
        self.mix = torch.randn(dim, dim, generator=g, dtype=dtype).to(self.device) / dim**0.5
        self.out = torch.randn(VOCAB, dim, generator=g, dtype=dtype).to(self.device)
        self.backbone_nbytes = sum(t.numel() * t.element_size() for t in (self.embed, self.mix, self.out))
        self.gate = threading.Event()  # cleared: classify waits (tests hold requests in flight), at most GATE_S
        self.gate.set()
        self.calls: list[tuple[str, list[str]]] = []  # (operation, prompt names) of every backend call

    def open_prompt(self, folder: Path, name: str) -> ToyPrompt:
        tensors, meta = load_prompt_files(folder)
        if meta.get("backbone") != self.name:
            raise PromptFileError(f"{folder} was trained on {meta.get('backbone')!r}, this server runs {self.name!r}")
        if meta.get("backbone_fingerprint") != self.fingerprint:
            raise PromptFileError(f"{folder} was trained on other weights ({meta.get('backbone_fingerprint')}, served: {self.fingerprint})")
        prompt, head = tensors["prompt"].to(self.dtype), tensors.get("head")
        head = head.to(self.dtype) if head is not None else None
        info = PromptInfo(
            name=name, method="toy", task="classification" if head is not None else "generation",
            operations=("classify",) if head is not None else ("generate",),
            classes=meta.get("classes") if head is not None else None,
            num_parameters=sum(t.numel() for t in tensors.values()),
            nbytes=sum(t.numel() * t.element_size() for t in tensors.values()), meta=meta,
        )
        return ToyPrompt(info, prompt, head)

    def prepare(self, prompt: ToyPrompt, operation: str, payload: Any, params: dict[str, Any]) -> Request:
        if self.kind == "vision":
            if not isinstance(payload, (bytes, bytearray)) or not payload.startswith(b"IMG"):
                raise UserError("input: not an image (cannot decode the bytes)")
            if len(payload) - 3 > self.limits.max_image_pixels:
                raise LimitError(f"input: the image has {len(payload) - 3} pixels, over the limit of {self.limits.max_image_pixels}")
            codes = [b % 128 for b in payload[3:]]
        else:
            if isinstance(payload, list):  # chat messages
                payload = "\n".join(f"{m['role']}: {m['content']}" for m in payload)
            if not isinstance(payload, str) or not payload:
                raise UserError("input: expected a non-empty string")
            codes = [ord(c) % 128 for c in payload]
            if len(codes) > self.limits.max_input_tokens:
                raise LimitError(f"input: {len(codes)} tokens, over the limit of {self.limits.max_input_tokens}")
        return Request(prompt, operation, torch.tensor(codes), dict(params), num_input_tokens=len(codes))

    def _pooled(self, prompts: list[torch.Tensor], inputs: list[torch.Tensor]) -> torch.Tensor:
        """The masked mean over each row's prompt and input embeddings, padded to one batch, then the tanh layer."""
        rows = [torch.cat([p, self.embed[x.to(self.device)]]) for p, x in zip(prompts, inputs)]
        length = max(r.shape[0] for r in rows)
        batch = torch.zeros(len(rows), length, self.dim, dtype=self.dtype, device=self.device)
        mask = torch.zeros(len(rows), length, dtype=self.dtype, device=self.device)
        for i, r in enumerate(rows):
            batch[i, : r.shape[0]], mask[i, : r.shape[0]] = r, 1
        mean = (batch * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.tanh(mean @ self.mix)

    def _pass_gate(self) -> None:
        if not self.gate.wait(GATE_S):
            raise RuntimeError(f"the toy backend's gate stayed closed for {GATE_S:g} s")

    def classify(self, requests: list[Request]) -> list[Classification]:
        self._pass_gate()
        self.calls.append(("classify", [r.prompt.info.name for r in requests]))
        pooled = self._pooled([r.prompt.prompt for r in requests], [r.input for r in requests])
        out = []
        for h, r in zip(pooled, requests):
            probs = torch.softmax(r.prompt.head @ h, -1)
            k = min(int(r.params.get("top_k", 1)), probs.numel())
            top = torch.topk(probs, k)
            classes = r.prompt.info.classes or [str(i) for i in range(probs.numel())]
            out.append(Classification([classes[i] for i in top.indices.tolist()], top.values.tolist(), top.indices.tolist()))
        return out

    def generate(self, requests: list[Request]) -> Iterator[list[GenerationStep | None]]:
        self.calls.append(("generate", [r.prompt.info.name for r in requests]))
        inputs = [r.input.clone() for r in requests]
        done = [False] * len(requests)
        counts = [0] * len(requests)
        gens = [torch.Generator().manual_seed(int(r.params.get("seed") or 0)) for r in requests]
        while not all(done):
            self._pass_gate()
            logits = self._pooled([r.prompt.prompt for r in requests], inputs) @ self.out.T
            step: list[GenerationStep | None] = []
            for i, r in enumerate(requests):
                if done[i]:
                    step.append(None)
                    continue
                temperature = float(r.params.get("temperature", 0.0))
                if temperature > 0:
                    token = int(torch.multinomial(torch.softmax(logits[i].cpu() / temperature, -1), 1, generator=gens[i]))
                else:
                    token = int(logits[i].argmax())
                counts[i] += 1
                inputs[i] = torch.cat([inputs[i], torch.tensor([97 + token])])
                reason = "stop" if token == STOP_TOKEN else "length" if counts[i] >= int(r.params.get("max_tokens", 16)) else None
                done[i] = reason is not None
                step.append(GenerationStep("" if token == STOP_TOKEN else chr(97 + token), [token], reason))
            yield step


class ToyVisionBackend(ToyBackend):
    kind: ClassVar[str] = "vision"


def build_toy(model: dict | None, prompt_folders: list[Path], device: torch.device, limits: Limits) -> ToyBackend:
    """The backend builder (``BACKENDS`` signature): ``model: {dim, seed, kind}`` (default: the first folder's)."""
    section = dict(model or load_prompt_files(prompt_folders[0])[1].get("model") or {})
    cls = ToyVisionBackend if section.pop("kind", "text") == "vision" else ToyBackend
    return cls(device=device, limits=limits, **section)


def make_prompt(folder: Path, backend: ToyBackend, length: int, num_classes: int | None, seed: int, classes: list[str] | None = None) -> Path:
    """Writes a toy prompt folder for ``backend``: a classifier with ``num_classes`` classes, or a generator (None)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {"prompt": torch.randn(length, backend.dim, generator=g)}
    config: dict[str, Any] = {"backbone": backend.name, "backbone_fingerprint": backend.fingerprint,
                              "model": {"dim": backend.dim, "seed": int(backend.fingerprint.rsplit("-", 1)[1]), "kind": backend.kind}}
    if num_classes is not None:
        tensors["head"] = torch.randn(num_classes, backend.dim, generator=g) * 3
        config["classes"] = classes or [f"class{seed}_{i}" for i in range(num_classes)]
    return save_prompt_files(folder, tensors, config)
