"""Test accuracy of text prompt tuning on the packaged real models and data: textpt against PEFT, the recipes and
the baselines, in one run.

Models: the packaged all-MiniLM-L6-v2 (``asset:minilm_l6``, task ``seq_cls``) and SmolLM2-135M-Instruct
(``asset:smollm2_135m``, causal LM scoring the verbalizer words); data: the packaged Rotten Tomatoes split
(``rotten_tomatoes``: the first TRAIN rows of its train split, the first TEST rows of its test split). Offline.

Rows, per model:

- ``textpt`` and ``PEFT``: prompt tuning through each library with everything else equal: the recipe's prompt
  (configs/textpt/minilm_seq_cls.yaml, configs/textpt/smollm2_verbalizer.yaml: 20 tokens, their init), textpt's
  initial prompt (and head) copied into PEFT's, the same tokenized batches in the same order (right padding, nothing
  truncated), the same loss, AdamW with the recipe's lr, a cosine schedule with the recipe's warmup scaled to the run,
  the same number of steps, in one plain loop. Both keep the frozen backbone in eval mode (no dropout). PEFT 0.21's
  ``PromptTuningConfig`` runs as a user calls it (``FEATURE_EXTRACTION`` on the bare encoder, ``CAUSAL_LM`` on the
  LM); the script reads the same features from its output as textpt does (the mean of the input's tokens through
  textpt's head; the verbalizer words' log-probabilities at the last real token). Reported: test accuracy with
  its 95% Wilson interval, McNemar's exact p between the two (same test rows), the median train step time ratio
  textpt / PEFT (wall clock and process CPU time), the peak resident memory (RSS) each adds in training, and the
  largest difference of their class scores before training (the two compute the same function).
- ``textpt recipe``: the recommended config itself through the library's trainer (its data pipeline, padding side
  and schedule), with the same train and test rows and steps; its warmup is scaled by the same fraction.
- MiniLM only: ``linear probe`` (the library's ``linear_probe`` method: textpt's head on the mean-pooled frozen
  features, the prompt runs' loop and settings) and ``full fine-tuning`` (every encoder weight trained, the same
  features and head, a plain loop, lr ``--ft-lr`` for the encoder and the recipe's lr for the head; dropout on), the
  ceiling.

Each model load runs in a fresh process, one after another: the textpt / PEFT pair shares one (one frozen
backbone, each side its own optimizer), and its train steps alternate between the two, the order swapped every
step, so a change in the machine's load hits both alike. Step times are medians over the steps after the first.
Memory is the process's resident set from /proc (not tracemalloc, which does not see torch's allocations): before
each step the freed memory is handed back (``malloc_trim``) and the peak is reset (``/proc/self/clear_refs``); the
figure is the step's peak (``VmHWM``) minus the resident set before it (activations, gradients, optimizer state
as the step allocates them), median over the steps after the first.

Usage: ``python bench/text_accuracy.py [--quick] [--models minilm smollm2] [--minilm TRAIN TEST STEPS]
[--smollm2 TRAIN TEST STEPS] [--write FILE]``; ``--quick`` took 80 minutes on a shared 2-core CPU (load 4-8, run at nice 10).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from emit import emit  # bench/emit.py: scripts run as `python bench/NAME.py`

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/NAME.py`: make `demo.stats` importable
    sys.path.insert(0, str(ROOT))
RECIPES = {"minilm": ROOT / "configs/textpt/minilm_seq_cls.yaml", "smollm2": ROOT / "configs/textpt/smollm2_verbalizer.yaml"}
LABELS = {"minilm": "all-MiniLM-L6-v2 (`asset:minilm_l6`, seq_cls)", "smollm2": "SmolLM2-135M-Instruct (`asset:smollm2_135m`, causal LM + verbalizer)"}
KINDS = {"minilm": ["pair", "recipe", "probe", "full_ft"], "smollm2": ["pair", "recipe"]}  # one process each
NAMES = {"textpt": "textpt prompt tuning", "peft": "PEFT prompt tuning", "recipe": "textpt recipe (trainer)", "probe": "linear probe (mean-pooled)", "full_ft": "full fine-tuning"}
# (train rows, test rows, steps)
SIZES = {"minilm": (2048, 2562, 192), "smollm2": (800, 1000, 100)}
QUICK = {"minilm": (1024, 2562, 64), "smollm2": (320, 500, 40)}


# ----- in the child process: one row ---------------------------------------------------------------------------------
def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _recipe(model: str, train: int, test: int, steps: int):
    from promptcore import load_config
    from textpt.assets import load_dataset
    from textpt.cli import TextRecipe
    from textpt.run_config import TextRunConfig

    full = TextRecipe().resolve_config(load_config(TextRunConfig, RECIPES[model]))
    whole = len(load_dataset("rotten_tomatoes", progress=False)["train"])
    full_steps = full.train.epochs * math.ceil(whole / full.train.batch_size)  # the recipe on the whole train split
    warmup = max(1, round(full.train.warmup_steps * steps / full_steps))
    overrides = [
        f"data.max_train_samples={train}", f"data.max_eval_samples={test}", f"train.max_steps={steps}",
        f"train.epochs={math.ceil(steps * full.train.batch_size / train)}", f"train.warmup_steps={warmup}",
        "train.eval_every_epochs=0", "train.progress_bar=false", "train.tensorboard=false",
    ]
    return TextRecipe().resolve_config(load_config(TextRunConfig, RECIPES[model], overrides)), overrides


def _rows(train: int, test: int):
    from textpt.assets import load_dataset

    dd = load_dataset("rotten_tomatoes", progress=False)
    tr, te = dd["train"].select(range(train)), dd["test"].select(range(test))
    return (list(tr["text"]), list(tr["label"])), (list(te["text"]), list(te["label"]))


def _batches(tokenizer, texts, labels, size, template=None):
    import torch

    out = []
    for i in range(0, len(texts), size):
        chunk = [template.format(text=t) if template else t for t in texts[i:i + size]]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=512, return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels[i:i + size])})
    return out


def _mean_pool(hidden, mask):
    w = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * w).sum(1) / w.sum(1).clamp(min=1)


def _trim() -> None:
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so the next step's allocations show in the RSS


def _schedule(optimizer, warmup: int, steps: int):
    """Linear warmup over ``warmup`` steps, then cosine to zero at ``steps`` (the trainer's ``cosine``)."""
    import torch

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _run_recipe(cfg) -> dict:
    """The recommended config through the library's trainer; per-row correctness on its eval rows."""
    import torch

    from promptcore.trainer import Trainer
    from textpt.cli import TextRecipe

    recipe = TextRecipe()
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    trainer = Trainer(model, cfg.train, data.train, data.eval, data.collate_fn, run_dir=None)
    start = time.perf_counter()
    result = trainer.fit()
    train_s = time.perf_counter() - start
    model.eval()
    correct = []
    with torch.no_grad():
        for i in range(0, len(data.eval), 64):
            batch = data.collate_fn([data.eval[j] for j in range(i, min(i + 64, len(data.eval)))])
            correct += (model.forward_batch(batch).argmax(-1) == batch["labels"]).tolist()
    if abs(sum(correct) / len(correct) - result["eval"]["accuracy"]) > 1e-9:
        raise RuntimeError(f"per-row accuracy {sum(correct) / len(correct)} differs from the trainer's {result['eval']['accuracy']}")
    return {"recipe": {"correct": correct, "train_s": train_s, "steps": result["step"], "trainer_accuracy": result["eval"]["accuracy"]}}


def run_child(spec: dict) -> dict:
    """Trains and evaluates one row (``pair``: textpt and PEFT, interleaved step by step); returns per-row
    correctness on the test rows, step times and memory for each side."""
    import torch
    import torch.nn.functional as F

    import textpt
    from textpt.loading import load_model_and_tokenizer

    model_key, kind, train, test, steps = spec["model"], spec["kind"], spec["train"], spec["test"], spec["steps"]
    cfg, _ = _recipe(model_key, train, test, steps)
    torch.manual_seed(0)
    if kind == "recipe":
        return _run_recipe(cfg)

    (tr_x, tr_y), (te_x, te_y) = _rows(train, test)
    backbone, tok = load_model_and_tokenizer(dataclasses.replace(cfg.model, padding_side="right"))  # see the docstring
    template = cfg.data.template if model_key == "smollm2" else None
    b = cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    order: list[int] = []
    while len(order) < steps * b:
        order += torch.randperm(train, generator=g).tolist()
    picks = [order[s * b:(s + 1) * b] for s in range(steps)]
    train_batches = [_batches(tok, [tr_x[j] for j in pick], [tr_y[j] for j in pick], b, template)[0] for pick in picks]
    test_batches = _batches(tok, te_x, te_y, 64, template)

    method = textpt.LinearProbeConfig(num_classes=2) if kind == "probe" else cfg.prompt
    pt = textpt.wrap(backbone, method, tokenizer=tok, task=cfg.model.task, pooling="mean" if model_key == "minilm" else "auto")
    sides: dict[str, tuple] = {}  # name -> (optimizer parameters, loss of a batch, class scores of a batch)
    if kind in ("pair", "probe"):
        sides["textpt" if kind == "pair" else "probe"] = (list(pt.prompt_parameters()), pt.training_step, pt.forward_batch)
    head = None
    if model_key == "minilm" and kind in ("pair", "full_ft"):
        head = torch.nn.Linear(pt.dim, 2)
        head.load_state_dict(pt.head.state_dict())  # textpt's initial head
    if kind == "pair":
        import peft

        n = cfg.prompt.num_tokens
        task_type = "FEATURE_EXTRACTION" if model_key == "minilm" else "CAUSAL_LM"
        pm = peft.get_peft_model(backbone, peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=n))
        prompt = pm.prompt_encoder["default"].embedding.weight
        with torch.no_grad():
            prompt.copy_(pt.prompts.weight)  # textpt's initial prompt
        pm.eval()
        words = pt.verbalizer_ids
        assert words is None or all(len(w) == 1 for w in words), "the PEFT side scores single-token label words"

        def peft_scores(batch):
            ids, mask = batch["input_ids"], batch["attention_mask"]
            if head is not None:
                return head(_mean_pool(pm(input_ids=ids, attention_mask=mask).last_hidden_state[:, n:], mask))
            logits = pm(input_ids=ids, attention_mask=mask).logits
            last = n + mask.sum(1) - 1  # right padding: the last real token, after the prompt
            return logits[torch.arange(logits.shape[0]), last].float().log_softmax(-1)[:, [w[0] for w in words]]

        def peft_loss(batch):
            return F.cross_entropy(peft_scores(batch).float(), batch["labels"])

        assert {id(p) for p in pm.parameters() if p.requires_grad} == {id(prompt)}, "PEFT trains more than its prompt"
        sides["peft"] = ([prompt] + (list(head.parameters()) if head is not None else []), peft_loss, peft_scores)
    if kind == "full_ft":
        encoder = backbone.requires_grad_(True).train()  # every weight trained, dropout on

        def ft_scores(batch):
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            return head(_mean_pool(hidden, batch["attention_mask"]))

        def ft_loss(batch):
            return F.cross_entropy(ft_scores(batch).float(), batch["labels"])

        sides["full_ft"] = ([{"params": list(encoder.parameters()), "lr": spec["ft_lr"]}, {"params": list(head.parameters())}], ft_loss, ft_scores)
    out: dict[str, dict] = {}
    if kind == "pair":
        with torch.no_grad():
            out["init_diff"] = float((sides["peft"][2](test_batches[0]) - pt.forward_batch(test_batches[0])).abs().max())

    optimizers = {k: torch.optim.AdamW(v[0], lr=cfg.train.lr, weight_decay=cfg.train.weight_decay) for k, v in sides.items()}
    schedules = {k: _schedule(o, cfg.train.warmup_steps, steps) for k, o in optimizers.items()}
    record = {k: {"wall": [], "cpu": [], "added_mib": [], "loss": []} for k in sides}
    names = list(sides)
    start = time.perf_counter()
    for step, batch in enumerate(train_batches):
        for name in names if step % 2 == 0 else names[::-1]:  # interleaved: load drift hits every side alike
            _, loss_fn, _ = sides[name]
            _trim()
            _reset_peak()
            rss = _status_mib("VmRSS")
            wall, cpu = time.perf_counter(), time.process_time()
            loss = loss_fn(batch)
            loss.backward()
            optimizers[name].step()
            schedules[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            r = record[name]
            r["wall"].append(time.perf_counter() - wall)
            r["cpu"].append(time.process_time() - cpu)
            r["added_mib"].append(_status_mib("VmHWM") - rss)
            r["loss"].append(float(loss))
    train_s = time.perf_counter() - start
    if kind == "full_ft":
        encoder.eval()
    for name, (_, _, score_fn) in sides.items():
        correct = []
        with torch.no_grad():
            for batch in test_batches:
                correct += (score_fn(batch).argmax(-1) == batch["labels"]).tolist()
        r = record[name]
        out[name] = {
            "correct": correct, "steps": steps, "train_s": sum(r["wall"]) if len(sides) > 1 else train_s,
            "step_wall": statistics.median(r["wall"][1:]), "step_cpu": statistics.median(r["cpu"][1:]),
            "added_mib": statistics.median(r["added_mib"][1:]), "loss_first": statistics.mean(r["loss"][:5]),
            "loss_last": statistics.mean(r["loss"][-5:]),
        }
    return out


# ----- the parent: rows, statistics, markdown --------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smaller sizes (train, test, steps): {QUICK}")
    parser.add_argument("--models", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--minilm", nargs=3, type=int, metavar=("TRAIN", "TEST", "STEPS"), help=f"default {SIZES['minilm']}")
    parser.add_argument("--smollm2", nargs=3, type=int, metavar=("TRAIN", "TEST", "STEPS"), help=f"default {SIZES['smollm2']}")
    parser.add_argument("--ft-lr", type=float, default=5e-5, help="full fine-tuning's encoder learning rate")
    parser.add_argument("--write", help="append the markdown figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_child(json.loads(args.child))), flush=True)
        return

    import torch

    from demo.stats import binomial_interval, mcnemar_exact

    load_before = os.getloadavg()
    began = time.perf_counter()
    results: dict[str, dict[str, dict]] = {}
    sizes = {}
    for model in args.models:
        sizes[model] = tuple(getattr(args, model) or (QUICK if args.quick else SIZES)[model])
        train, test, steps = sizes[model]
        results[model] = {}
        for kind in KINDS[model]:
            spec = {"model": model, "kind": kind, "train": train, "test": test, "steps": steps, "ft_lr": args.ft_lr}
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False,
                                  env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                sys.exit(f"{model} {kind} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
            for name, r in json.loads(line[len("RESULT "):]).items():
                results[model][name] = r
                if isinstance(r, dict):
                    print(f"{model} {name}: accuracy {sum(r['correct']) / len(r['correct']):.4f}, train {r['train_s']:.0f} s", flush=True)
    minutes = (time.perf_counter() - began) / 60
    load_after = os.getloadavg()

    command = "python bench/text_accuracy.py " + " ".join(a for a in sys.argv[1:])

    def fmt(xs):
        return " / ".join(f"{x:.1f}" for x in xs)

    lines = [
        "## Text accuracy (bench/text_accuracy.py)", "",
        (f"`{command.strip()}` on {platform.machine()} CPU with {os.cpu_count()} cores, no GPU, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {__import__('transformers').__version__}, peft {__import__('peft').__version__}, "
        f"{time.strftime('%Y-%m-%d')}; load average (1/5/15 min) {fmt(load_before)} at the start, {fmt(load_after)} at the end; "
        f"{minutes:.1f} min in all. Rotten Tomatoes (the packaged split): the first rows of its train and test splits, as many as the table gives."), "",
        "| model | method | train rows / steps / batch | test accuracy | 95% interval | n | train s (recipe: with its final evaluation) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        train, test, steps = sizes[model]
        cfg, _ = _recipe(model, train, test, steps)
        for kind, r in rows.items():
            if not isinstance(r, dict):
                continue
            k, n = sum(r["correct"]), len(r["correct"])
            low, high = binomial_interval(k, n)
            lines.append(f"| {LABELS[model]} | {NAMES[kind]} | {train} / {r['steps']} / {cfg.train.batch_size} | {k / n:.3f} | {low:.3f}-{high:.3f} | {n} | {r['train_s']:.0f} |")
    lines += [
        "", "textpt against PEFT (prompt tuning, matched as described in the script): ratios textpt / PEFT, lower is better.", "",
        "| model | McNemar p (only textpt right / only PEFT right) | train step wall s, textpt / PEFT | ratio | CPU s per step, textpt / PEFT | ratio | peak RSS added by a train step, textpt / PEFT | ratio | max class-score difference before training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        t, p = rows["textpt"], rows["peft"]
        only_t = sum(a and not b for a, b in zip(t["correct"], p["correct"]))
        only_p = sum(b and not a for a, b in zip(t["correct"], p["correct"]))
        lines.append(
            f"| {model} | {mcnemar_exact(only_t, only_p):.3f} ({only_t} / {only_p}) | {t['step_wall']:.3f} / {p['step_wall']:.3f} | "
            f"**{t['step_wall'] / p['step_wall']:.2f}** | {t['step_cpu']:.3f} / {p['step_cpu']:.3f} | {t['step_cpu'] / p['step_cpu']:.2f} | "
            f"{t['added_mib']:.0f} / {p['added_mib']:.0f} MiB | **{t['added_mib'] / p['added_mib']:.2f}** | {rows['init_diff']:.1e} |"
        )
    lines += ["", "Training loss (mean of the first 5 / last 5 steps): " + "; ".join(
        f"{model} {kind} {r['loss_first']:.3f} -> {r['loss_last']:.3f}" for model, rows in results.items() for kind, r in rows.items() if isinstance(r, dict) and "loss_first" in r
    ) + "."]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
