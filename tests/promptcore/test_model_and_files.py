import json
import os
import warnings

import pytest
import torch
from torch import nn

from promptcore import PromptedModel, PromptFileError, SoftPrompt, load_prompt_files, wrap
from promptcore.files import CONFIG_FILE, TENSORS_FILE
from promptcore.fingerprint import backbone_fingerprint


class Toy(PromptedModel):
    """A frozen 2-layer MLP over [prompt; input] tokens, with a linear head."""

    def __init__(self, dim=8, num_tokens=3, num_classes=4, reparam=None, name="toy-mlp"):
        super().__init__()
        self.name = name
        self.backbone = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.5), nn.GELU(), nn.Linear(dim, dim))
        self.prompts = SoftPrompt(num_tokens, dim, reparam=reparam, dropout=0.1)
        self.head = nn.Linear(dim, num_classes)
        self.freeze_backbone()

    def prompt_config(self):
        return {"method": "toy", "backbone": self.name, "dim": self.prompts.dim,
                "num_tokens": self.prompts.num_tokens, "num_classes": self.head.out_features}

    def forward_batch(self, batch):
        x = batch["x"]
        tokens = torch.cat([self.prompts(x.shape[0]), x], dim=1)
        return self.head(self.backbone(tokens).mean(1))


def batch(n=5, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 6, dim, generator=g), "labels": torch.randint(0, 4, (n,), generator=g)}


def test_only_prompt_and_head_get_gradients():
    m = Toy()
    m.training_step(batch()).backward()
    with_grad = {n for n, p in m.named_parameters() if p.grad is not None}
    assert with_grad == {"prompts.weight", "head.weight", "head.bias"}
    assert {n for n, _ in m.named_prompt_parameters()} == with_grad


def test_train_mode_keeps_backbone_in_eval():
    m = Toy().train()
    assert m.training and m.prompts.training and m.head.training
    assert not any(mod.training for mod in m.backbone.modules())


def test_print_trainable_parameters(capsys):
    m = Toy()
    line = m.print_trainable_parameters()
    trainable = 3 * 8 + 8 * 4 + 4
    total = trainable + 2 * (8 * 8 + 8)
    assert line == f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
    assert capsys.readouterr().out.strip() == line


@pytest.mark.parametrize("reparam", [None, "mlp", "lstm"])
def test_save_load_gives_identical_outputs(tmp_path, reparam):
    torch.manual_seed(0)
    m = Toy(reparam=reparam).eval()
    out = m.forward_batch(batch())
    m.save_prompts(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [CONFIG_FILE, TENSORS_FILE]
    torch.manual_seed(1)
    other = Toy(reparam=reparam).eval()
    other.backbone.load_state_dict(m.backbone.state_dict())
    assert not torch.allclose(other.forward_batch(batch()), out)
    meta = other.load_prompts(tmp_path / "p")
    assert meta["method"] == "toy" and meta["toolkit"] == "prompttune"
    assert torch.equal(other.forward_batch(batch()), out)
    tensors, _ = load_prompt_files(tmp_path / "p")
    assert set(tensors) == {"prompts.weight", "head.weight", "head.bias"}  # folded: no encoder weights saved


def test_prompt_file_is_small_and_holds_no_backbone(tmp_path):
    m = Toy(dim=64, num_tokens=10)
    m.save_prompts(tmp_path / "p")
    size = (tmp_path / "p" / TENSORS_FILE).stat().st_size
    assert size < (10 * 64 + 64 * 4 + 4) * 4 + 1024


def test_mismatched_prompt_file_is_refused_with_expected_vs_found(tmp_path):
    Toy(dim=8, name="vit_small").save_prompts(tmp_path / "p")
    m = Toy(dim=16, name="vit_base")
    with pytest.raises(PromptFileError, match=r"prompt dim 8 does not match backbone width 16 \(vit_base\)"):
        m.load_prompts(tmp_path / "p")
    with pytest.raises(PromptFileError, match=r"prompt length 3 does not match the model's prompt length 5"):
        Toy(num_tokens=5).load_prompts(tmp_path / "p")


def test_other_backbone_with_same_sizes_warns(tmp_path):
    Toy(name="a").save_prompts(tmp_path / "p")
    with pytest.warns(UserWarning, match="trained on backbone 'a', loading into 'b'"):
        Toy(name="b").load_prompts(tmp_path / "p")


def test_same_backbone_name_with_other_weights_warns_with_both_fingerprints(tmp_path):
    torch.manual_seed(0)
    trained = Toy()
    trained.save_prompts(tmp_path / "p")
    recorded = json.loads((tmp_path / "p" / CONFIG_FILE).read_text())["backbone_fingerprint"]
    assert recorded == trained.backbone_fingerprint() and len(recorded) == 16
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the very same weights load without a word
        Toy().load_prompts(tmp_path / "p")
    torch.manual_seed(1)  # a random backbone rebuilt with another seed: same name, same shapes, other weights
    other = Toy()
    with pytest.warns(UserWarning, match=rf"trained on backbone 'toy-mlp' with weights fingerprint {recorded}; this 'toy-mlp' has {other.backbone_fingerprint()}"):
        other.load_prompts(tmp_path / "p")


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    m = Toy()
    m.save_prompts(tmp_path / "p")
    weights = tmp_path / "p" / TENSORS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(PromptFileError, match="prompts.safetensors is truncated or corrupt"):
        m.load_prompts(tmp_path / "p")
    m.save_prompts(tmp_path / "p")
    cfg = tmp_path / "p" / CONFIG_FILE
    cfg.write_text(cfg.read_text()[:20])
    with pytest.raises(PromptFileError, match="prompt_config.json is not valid JSON"):
        m.load_prompts(tmp_path / "p")


def test_missing_folder_and_foreign_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompt folder .* does not exist"):
        Toy().load_prompts(tmp_path / "nope")
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / CONFIG_FILE).write_text(json.dumps({"method": "x"}))
    with pytest.raises(PromptFileError, match="was not written by prompttune"):
        Toy().load_prompts(tmp_path / "q")


def test_save_replaces_folder_atomically(tmp_path):
    m = Toy()
    m.save_prompts(tmp_path / "p")
    with torch.no_grad():
        m.prompts.weight.add_(1)
    m.save_prompts(tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temp or .old folders left
    tensors, _ = load_prompt_files(tmp_path / "p")
    assert torch.equal(tensors["prompts.weight"], m.prompts.weight.detach())


def test_wrap_without_registered_method_says_what_to_do():
    with pytest.raises(TypeError, match="dict is not the config of a registered prompt method.*Import the package"):
        wrap(nn.Linear(2, 2), {})


def test_prompt_folder_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        Toy().save_prompts(tmp_path / "p")
    finally:
        os.umask(old)
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "p" / TENSORS_FILE).stat().st_mode & 0o777 == 0o644


def test_a_backbone_whose_weights_are_not_here_records_no_fingerprint(tmp_path):
    with torch.device("meta"):
        placeholder = nn.Linear(4, 4)  # as sharded or offloaded weights look to one process
    assert backbone_fingerprint(placeholder) is None
    assert backbone_fingerprint(nn.Linear(4, 4)) != backbone_fingerprint(nn.Linear(4, 4))


def test_the_fingerprint_samples_a_large_tensor_up_to_its_last_value():
    # 28,311,552 values: a float32 linspace to the last index rounds past the end of the tensor.
    big = nn.Embedding(28_311_552 // 64, 64)
    first = backbone_fingerprint(big)
    with torch.no_grad():
        big.weight.view(-1)[-1] += 1.0  # the last value is sampled, so it changes the fingerprint
    assert backbone_fingerprint(big) != first
