import math

import pytest
import torch

from promptcore import DeepSoftPrompt, PromptBank, SoftPrompt, init_prompt_, vpt_xavier_bound
from promptcore.errors import UserError


def test_xavier_matches_vpt_bound():
    # VPT: v = sqrt(6 / (3 * patch_area + dim)); ViT-B/16 -> patch area 256, dim 768.
    assert vpt_xavier_bound(256, 768) == pytest.approx(math.sqrt(6 / (3 * 256 + 768)))
    p = SoftPrompt(200, 768, init="xavier", patch_area=256, generator=torch.Generator().manual_seed(0))
    v = vpt_xavier_bound(256, 768)
    assert p.weight.abs().max() <= v
    assert p.weight.abs().max() > 0.9 * v  # spread over the whole range, not a narrower one


@pytest.mark.parametrize("init,kw,check", [
    ("normal", {"std": 0.02}, lambda w: 0.015 < w.std() < 0.025),
    ("uniform", {"init_range": 0.5}, lambda w: w.abs().max() <= 0.5 and w.abs().max() > 0.45),
    ("zeros", {}, lambda w: (w == 0).all()),
])
def test_named_inits(init, kw, check):
    p = SoftPrompt(64, 32, init=init, generator=torch.Generator().manual_seed(0), **kw)
    assert check(p.weight.detach())


def test_tensor_vocab_and_text_inits():
    emb = torch.randn(50, 8)
    t = torch.randn(4, 8)
    assert torch.equal(SoftPrompt(4, 8, init="tensor", tensor=t).weight, t)
    vocab = SoftPrompt(6, 8, init="vocab", embedding=emb, generator=torch.Generator().manual_seed(0)).weight
    rows = [int((emb == r).all(1).nonzero()[0]) for r in vocab]
    assert len(set(rows)) == 6  # sampled without replacement
    text = SoftPrompt(5, 8, init="text", embedding=emb, token_ids=[3, 7]).weight
    assert torch.equal(text, emb[[3, 7, 3, 7, 3]])  # repeated to num_tokens
    assert torch.equal(SoftPrompt(1, 8, init="text", embedding=emb, token_ids=[3, 7]).weight, emb[[3]])  # truncated


def test_vocab_draws_from_the_first_population_rows():
    emb = torch.randn(50, 8)
    rows = SoftPrompt(40, 8, init="vocab", embedding=emb, population=5, generator=torch.Generator().manual_seed(0)).weight
    drawn = {int((emb == r).all(1).nonzero()[0]) for r in rows}
    assert drawn == set(range(5))  # more positions than the population: drawn with replacement, only from it
    few = SoftPrompt(4, 8, init="vocab", embedding=emb, population=5, generator=torch.Generator().manual_seed(1)).weight
    idx = [int((emb == r).all(1).nonzero()[0]) for r in few]
    assert len(set(idx)) == 4 and max(idx) < 5


def test_class_labels_puts_each_label_first_and_samples_the_rest():
    # Lester et al.: label i at position i (several sub-tokens averaged), the rest drawn from the first rows.
    emb = torch.randn(50, 8)
    p = SoftPrompt(6, 8, init="class_labels", embedding=emb, token_groups=[[10, 11], [20]], population=5,
                   generator=torch.Generator().manual_seed(0))
    w = p.weight.detach()
    torch.testing.assert_close(w[0], (emb[10] + emb[11]) / 2, rtol=0, atol=1e-7)
    assert torch.equal(w[1], emb[20])
    assert all(int((emb == r).all(1).nonzero()[0]) < 5 for r in w[2:])
    bank = PromptBank(3, (4, 8), init="class_labels", embedding=emb, token_groups=[[1], [2]], population=10)
    assert all(torch.equal(bank.weight[t, 1], emb[2]) for t in range(3))


def test_init_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_tokens must be a positive integer, got 0"):
        SoftPrompt(0, 8)
    with pytest.raises(ValueError, match="needs patch_area"):
        SoftPrompt(2, 8, init="xavier")
    with pytest.raises(ValueError, match=r"unknown prompt init 'gauss'; choose one of normal, uniform, xavier"):
        SoftPrompt(2, 8, init="gauss")
    with pytest.raises(ValueError, match=r"embedding matrix has shape \(10, 4\), expected \[vocab, 8\]"):
        SoftPrompt(2, 8, init="vocab", embedding=torch.randn(10, 4))
    with pytest.raises(ValueError, match="init text gave no tokens"):
        SoftPrompt(2, 8, init="text", embedding=torch.randn(10, 8), token_ids=[])
    with pytest.raises(ValueError, match="3 labels do not fit 2 prompt positions"):
        SoftPrompt(2, 8, init="class_labels", embedding=torch.randn(10, 8), token_groups=[[1], [2], [3]])
    with pytest.raises(ValueError, match="label 1 gave no tokens"):
        SoftPrompt(2, 8, init="class_labels", embedding=torch.randn(10, 8), token_groups=[[1], []])
    with pytest.raises(ValueError, match="population must be a positive number of embedding rows, got 0"):
        SoftPrompt(2, 8, init="vocab", embedding=torch.randn(10, 8), population=0)


def test_forward_shapes_and_dropout_only_in_training():
    p = SoftPrompt(3, 4, dropout=0.5)
    assert p(2).shape == (2, 3, 4)
    p.eval()
    assert torch.equal(p(), p.weight)
    p.train()
    torch.manual_seed(0)
    assert not torch.equal(p(), p.weight)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_reparam_folds_to_the_same_embeddings(kind):
    torch.manual_seed(0)
    p = SoftPrompt(5, 8, reparam=kind).eval()
    before = p().detach().clone()
    assert not torch.equal(before, p.weight)
    assert torch.equal(p.folded_state()["weight"], before)
    p.fold()
    assert p.encoder is None
    assert torch.equal(p(), before)
    assert [n for n, _ in p.named_parameters()] == ["weight"]


def test_lstm_encoder_is_p_tunings_official_structure():
    # THUDM/P-tuning LAMA/p_tuning/prompt_encoder.py: LSTM(H, H // 2, num_layers=2, bidirectional) then
    # Linear(H, H) - ReLU - Linear(H, H). Built independently here, it takes the encoder's weights name for name
    # and gives the same prompt in float64.
    torch.manual_seed(0)
    p = SoftPrompt(5, 8, reparam="lstm").double()
    lstm_head = torch.nn.LSTM(input_size=8, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True).double()
    mlp_head = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8)).double()
    lstm_head.load_state_dict(p.encoder.lstm.state_dict())
    mlp_head.load_state_dict(p.encoder.mlp.state_dict())
    official = mlp_head(lstm_head(p.weight.unsqueeze(0))[0]).squeeze(0)
    torch.testing.assert_close(p(), official, rtol=0, atol=0)


def test_folded_lstm_prompt_equals_the_encoder_output_in_float64():
    torch.manual_seed(0)
    p = SoftPrompt(7, 16, reparam="lstm").double().eval()
    out = p.encoder(p.weight).detach().clone()
    assert out.dtype == torch.float64
    p.fold()
    assert p.encoder is None and torch.equal(p.weight, out)


def test_reparam_gets_gradients_through_the_encoder():
    p = SoftPrompt(5, 8, reparam="mlp")
    p().sum().backward()
    assert p.weight.grad is not None and all(q.grad is not None for q in p.encoder.parameters())


def test_deep_prompt_layers():
    d = DeepSoftPrompt(3, 2, 4)
    assert d().shape == (3, 2, 4)
    assert torch.equal(d(1), d.weight[1])
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        DeepSoftPrompt(0, 2, 4)


def test_bank_selects_per_sample_and_checks_ids():
    bank = PromptBank(3, (2, 4))
    ids = torch.tensor([2, 0, 2, 1])
    out = bank(ids)
    assert out.shape == (4, 2, 4)
    for i, t in enumerate(ids):
        assert torch.equal(out[i], bank.weight[t])
    deep = PromptBank(2, (5, 2, 4))
    assert deep(torch.tensor([1])).shape == (1, 5, 2, 4)
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 2\] for a bank of 3 tasks, found 0..3"):
        bank(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="task_ids must be a 1-D integer tensor"):
        bank(torch.tensor([0.0]))


def test_init_prompt_fills_in_place():
    w = torch.empty(2, 3, 4)
    assert init_prompt_(w, "zeros") is w and (w == 0).all()


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: SoftPrompt(3, 4, reparam="mlp"), (3, 4)),
        (lambda: DeepSoftPrompt(2, 3, 4), (2, 3, 4)),
        (lambda: PromptBank(3, (2, 3, 4)), (2, 3, 4)),
    ],
)
def test_every_prompt_kind_answers_table_for_batch_and_used_table(make, shape):
    torch.manual_seed(0)
    p = make().double()
    ids = torch.tensor([2, 0, 2, 2]) if p.num_tasks > 1 else None
    table = p.table()
    assert table.shape == (p.num_tasks, *shape)
    batch = p.for_batch(ids, 4)
    assert batch.shape == (4, *shape)
    expected = table[ids] if ids is not None else table.expand(4, *shape)
    assert torch.equal(batch, expected)
    used, rows = p.used_table(ids)
    if ids is None:
        assert rows is None and torch.equal(used, table)
    else:
        assert torch.equal(used, table[torch.tensor([0, 2])]) and rows.tolist() == [1, 0, 1, 1]
        assert torch.equal(used[rows], batch)


def test_bank_without_task_ids_says_to_give_them():
    with pytest.raises(UserError, match="give task_ids"):
        PromptBank(2, (3, 4)).for_batch(None, 2)
