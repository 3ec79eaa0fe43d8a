"""A prompt bank's gather: its backward is bitwise reproducible on the CPU at a fixed thread count, and agrees with
plain indexing."""

import torch

from promptcore.prompts import PromptBank


def _bank_grad(dtype: torch.dtype = torch.float32, plain: bool = False) -> torch.Tensor:
    torch.manual_seed(0)
    bank = PromptBank(3, (16, 64)).to(dtype)
    g = torch.Generator().manual_seed(1)
    task_ids = torch.randint(0, 3, (512,), generator=g)
    upstream = torch.randn(512, 16, 64, generator=g, dtype=dtype)
    out = bank.weight[task_ids] if plain else bank(task_ids)
    (out * upstream).sum().backward()
    return bank.weight.grad


def test_bank_backward_is_bitwise_reproducible_with_two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = [_bank_grad() for _ in range(12)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_bank_gather_agrees_with_plain_indexing_in_float64():
    torch.manual_seed(0)
    bank = PromptBank(4, (2, 3, 5)).double()
    task_ids = torch.tensor([3, 0, 3, 1, 3, 0])
    assert torch.equal(bank(task_ids), bank.weight[task_ids])
    torch.testing.assert_close(_bank_grad(torch.float64), _bank_grad(torch.float64, plain=True), rtol=1e-12, atol=1e-12)
