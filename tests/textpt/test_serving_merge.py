"""Per-task heads in seq_cls banks, and merging single-task prompt folders into a bank (textpt merge-prompts)."""

import pytest
import torch

import textpt
from promptcore import PromptFileError, read_prompt_config
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.cli import main
from textpt.mixed import merge_prompts
from textpt.padding import repad
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14], [15, 16, 17, 18, 19]]


def backbone(model_type, task):
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], padding_side="left"))


def saved(model, tok, task, method, i, folder, **fields):
    m = textpt.wrap(model, method_config(method, num_tokens=3, seed=i, init_std=1.0, **fields), tokenizer=tok, task=task)
    with torch.no_grad():
        for p in m.prompt_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(10 + i)))
    m.record_in_prompt_files(method_config={"method": method, "num_tokens": 3, "seed": i, "init_std": 1.0, **fields})
    m.save_prompts(folder)
    return m.eval()


@pytest.mark.parametrize("model_type,task,methods,fields", [
    ("bert", "seq_cls", ["prompt_tuning", "p_tuning", "prompt_tuning"], {"num_classes": 3}),
    ("bert", "seq_cls", ["prefix", "prefix"], {"num_classes": 2}),
    ("llama", "causal_lm", ["prompt_tuning", "p_tuning"], {"verbalizer": [" good", " bad"]}),
    ("llama", "causal_lm", ["prefix", "prefix", "prefix"], {"verbalizer": [" good", " bad"]}),
])
def test_bank_rows_equal_each_folder_alone(tmp_path, model_type, task, methods, fields):
    model, tok = backbone(model_type, task)
    singles = [saved(model, tok, task, m, i, tmp_path / f"t{i}", **fields) for i, m in enumerate(methods)]
    out = tmp_path / "bank"
    assert main(["merge-prompts", str(out), *(str(tmp_path / f"t{i}") for i in range(len(methods)))]) == 0
    meta = read_prompt_config(out)
    assert meta["num_tasks"] == len(methods) and [t["folder"] for t in meta["tasks"]] == [str(tmp_path / f"t{i}") for i in range(len(methods))]
    bank = textpt.load_prompted(out, model, tok)
    assert bank.num_tasks == len(methods)
    if task == "seq_cls":
        assert bank.head.weight.shape[0] == len(methods)  # one head per task
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    tasks = torch.tensor([i % len(methods) for i in range(len(ROWS))])
    with torch.no_grad():
        mixed = bank.class_logits(ids, mask, tasks)
        for r, row in enumerate(ROWS):
            alone = torch.tensor([row])
            torch.testing.assert_close(mixed[r], singles[int(tasks[r])].class_logits(alone, torch.ones_like(alone))[0], atol=1e-5, rtol=1e-5)


def test_single_task_heads_load_as_before(tmp_path):
    model, tok = backbone("bert", "seq_cls")
    m = saved(model, tok, "seq_cls", "prompt_tuning", 0, tmp_path / "one", num_classes=2)
    assert isinstance(m.head, torch.nn.Linear) and read_prompt_config(tmp_path / "one")["tensors"]["head.weight"]["shape"] == [2, 32]


def test_merge_refuses_what_a_bank_cannot_share(tmp_path):
    model, tok = backbone("bert", "seq_cls")
    saved(model, tok, "seq_cls", "prompt_tuning", 0, tmp_path / "a", num_classes=2)
    saved(model, tok, "seq_cls", "prompt_tuning", 1, tmp_path / "b", num_classes=3)
    saved(model, tok, "seq_cls", "prefix", 2, tmp_path / "c", num_classes=2)
    saved(model, tok, "seq_cls", "dept", 3, tmp_path / "d", num_classes=2)
    with pytest.raises(PromptFileError, match="has number of classes 3, .* has 2"):
        merge_prompts(tmp_path / "bank", [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(PromptFileError, match="holds a prefix prompt, .* a prompt_tuning prompt"):
        merge_prompts(tmp_path / "bank", [tmp_path / "a", tmp_path / "c"])
    with pytest.raises(PromptFileError, match="holds a dept prompt; banks hold"):
        merge_prompts(tmp_path / "bank", [tmp_path / "a", tmp_path / "d"])


def test_merge_prompts_cli_errors_exit_2(tmp_path, capsys):
    assert main(["merge-prompts", str(tmp_path / "bank"), str(tmp_path / "missing"), str(tmp_path / "missing2")]) == 2
    assert "error:" in capsys.readouterr().err
