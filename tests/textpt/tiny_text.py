"""What the text tests share: tiny ``random:`` model configs, configs by method name, and the slow reference decode.

Imported as ``tiny_text`` (the pytest config puts this folder on ``sys.path`` for every test).
"""

from __future__ import annotations

from typing import Any

import torch

from promptcore import METHODS
from textpt.padding import last_token_index, pad_token_id, repad

# ``model.kwargs`` of tiny ``random:`` models: two layers, width 32.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128},
    "t5": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4},
    "bert": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 128},
}


def method_config(method: str = "prompt_tuning", **fields: Any) -> Any:
    """The config of the registered text method ``method`` with ``fields``."""
    return METHODS.get(f"text:{method}").config_class(**fields)


@torch.no_grad()
def reference_greedy_decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, task_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Greedy decoding without a cache: each step runs the full (padded) sequence through ``model.token_logits`` and
    appends the argmax of each example's last real position. Causal LMs only; returns the new tokens
    ``[B, max_new_tokens]``."""
    rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)]
    new: list[list[int]] = [[] for _ in rows]
    for _ in range(max_new_tokens):
        ids, mask = repad([r + t for r, t in zip(rows, new)], pad_token_id(model.tokenizer), model.padding_side, input_ids.device)
        logits = model.token_logits(ids, mask, task_ids)
        last = logits[torch.arange(ids.shape[0]), last_token_index(mask)]
        for i, token in enumerate(last.argmax(-1).tolist()):
            new[i].append(token)
    return torch.tensor(new, dtype=torch.long, device=input_ids.device)
