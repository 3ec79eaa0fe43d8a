"""``make serving-demo``: five prompts trained on packaged models and data, then served together on two backbones.

Three vision tasks on the frozen EfficientNet-Lite0 with Fashion-MNIST (the 10 classes; tops / bottoms / footwear /
bags; which of the three shoes) and two text tasks on the frozen SmolLM2-135M-Instruct with Rotten Tomatoes review
snippets (sentiment by scoring two words; the critic's verdict, generated). Each prompt trains with its package's CLI
(``vpt train`` / ``textpt train`` on ``configs/serving_demo/``); then the vision prompts are served on one backbone and
the text prompts on another, through the server's Python API (:class:`promptcore.serving.PromptServer`, mixed
batches) and through its HTTP app on loopback (concurrent requests, the ``openai`` client for completions). Every
served answer is checked against the offline prediction of its prompt (``vpt.load_prompted`` /
``textpt.load_prompted``, run alone), and ``demo/serving_report.md`` gets, per task, the held-out accuracy with its
95% interval, the served requests that matched, and the prompt file's size. Usage::

    python demo/serving_demo.py                 # everything (18 minutes on a shared, loaded 2-core CPU)
    python demo/serving_demo.py --tiny --out /tmp/serving   # a few steps and rows: checks the pipeline only
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import platform
import random
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from demo.stats import binomial_interval  # noqa: E402

SEED = 0
VERDICT_MAX_TOKENS = 3  # " fresh" / " rotten" and what follows them: enough to read the verdict, short to serve


@dataclass
class ServedTask:
    """One task of the demo.

    Attributes:
        name: the prompt's served name (and its run folder).
        title: what the task is, for the report.
        package: ``vpt`` or ``textpt``: whose CLI trains it, and which backbone serves it.
        config: the run config, relative to the repository root.
        method: how the report names the method.
    """

    name: str
    title: str
    package: str
    config: str
    method: str


TASKS = [
    ServedTask("fashion10", "Fashion-MNIST, 10 classes", "vpt", "configs/serving_demo/vpt_fashion10.yaml", "pixel prompt (8 px) + linear head"),
    ServedTask("fashion-groups", "tops / bottoms / footwear / bags", "vpt", "configs/serving_demo/vpt_fashion_groups.yaml", "pixel prompt (8 px) + linear head"),
    ServedTask("footwear", "sandal / sneaker / ankle boot", "vpt", "configs/serving_demo/vpt_footwear.yaml", "linear probe"),
    ServedTask("sentiment", "review sentiment (negative / positive), scored", "textpt", "configs/serving_demo/textpt_sentiment.yaml", "prompt tuning (8 tokens), verbalizer"),
    ServedTask("verdict", "critic's verdict (fresh / rotten), generated", "textpt", "configs/serving_demo/textpt_verdict.yaml", "prompt tuning (8 tokens), generation"),
]


@dataclass
class Sizes:
    """How much the demo trains, evaluates and serves (``--tiny``: a pipeline check in about a minute)."""

    overrides: dict[str, list[str]] = field(default_factory=dict)  # task name -> extra --set of its training run
    eval_rows: dict[str, int] = field(default_factory=lambda: {"vpt": 300, "textpt": 150})  # held-out rows per task
    served_python: int = 48  # rows per task served through the Python API, in mixed batches
    served_http: int = 16  # rows per task served over HTTP, concurrently
    batch_size: int = 16  # rows of one mixed batch (Python API)
    concurrency: int = 8  # HTTP requests in flight at once


FULL = Sizes()
TINY = Sizes(
    overrides={
        "vpt": ["data.shots=2", "train.epochs=1", "train.batch_size=8", "data.image_size=64"],
        "textpt": ["data.max_train_samples=8", "train.batch_size=4", "data.max_length=24"],
    },
    eval_rows={"vpt": 12, "textpt": 6},
    served_python=6,
    served_http=3,
    batch_size=5,
    concurrency=4,
)


# ----- training ------------------------------------------------------------------------------------------------------
def write_verdict_data(folder: Path) -> dict[str, str]:
    """The verdict task's CSV files (columns ``text``, ``verdict``: the rotten_tomatoes asset's split, each label
    written as its name); returns the ``--set`` overrides that point the run config at them."""
    from textpt.assets import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    data = load_dataset("rotten_tomatoes")
    names = data["train"].features["label"].names
    files = {}
    for split in ("train", "test"):
        table = data[split].to_pandas()
        table["verdict"] = [names[y] for y in table["label"]]
        path = folder / f"verdict_{split}.csv"
        table[["text", "verdict"]].to_csv(path, index=False)
        files[split] = str(path)
    return files


def train(task: ServedTask, runs: Path, overrides: list[str]) -> Path:
    """Trains ``task`` with its package's CLI (no evaluation during training: the demo evaluates the saved prompt)
    and returns its prompt folder."""
    from promptcore.cli import main

    if task.package == "vpt":
        from vpt.cli import VisionRecipe as Recipe
    else:
        from textpt.cli import TextRecipe as Recipe
    run_dir = runs / task.name
    sets = ["data.eval_split=null", *overrides]
    argv = ["train", "-c", str(ROOT / task.config), "-o", str(run_dir), "--overwrite"]
    for item in sets:
        argv += ["--set", item]
    print(f"\n== {task.package} train {task.name}: {' '.join(argv[1:])}", flush=True)
    status = main(Recipe(), argv)
    if status != 0:
        raise SystemExit(f"training {task.name} failed (exit status {status})")
    return run_dir / "last"


def folder_kb(folder: Path) -> float:
    """The size of a prompt folder's files (tensors and config), in KB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1024


# ----- held-out rows and offline predictions -------------------------------------------------------------------------
@dataclass
class Rows:
    """A task's held-out rows: inputs (PIL images or texts) and their true labels (class indices; for the verdict,
    the class names)."""

    inputs: list[Any]
    labels: list[Any]


def vision_rows(task: ServedTask, n: int) -> Rows:
    """A seeded subset of ``n`` rows of the task's test split, regrouped as its config says."""
    from promptcore import load_config
    from vpt.cli import VisionRecipe
    from vpt.data import load_sources, to_rgb

    cfg = load_config(VisionRecipe.config_class, ROOT / task.config)
    _, evals = load_sources(cfg.data)
    order = sorted(random.Random(SEED).sample(range(len(evals)), min(n, len(evals))))
    return Rows([to_rgb(evals.load(i)) for i in order], [evals.labels[i] for i in order])


def text_rows(task: ServedTask, n: int) -> Rows:
    """The first ``n`` rows of the rotten_tomatoes test split (the rows ``max_eval_samples`` evaluates)."""
    from textpt.assets import load_dataset

    test = load_dataset("rotten_tomatoes")["test"]
    rows = test.select(range(min(n, len(test))))
    names = test.features["label"].names
    labels = [int(y) for y in rows["label"]]
    return Rows(list(rows["text"]), labels if task.name != "verdict" else [names[y] for y in labels])


@torch.no_grad()
def vision_offline(folder: Path, images: list[Any], batch_size: int = 64) -> list[int]:
    """The class each image gets from the prompt folder's own model (``vpt.load_prompted``), with the
    preprocessing its training recorded."""
    import vpt
    from promptcore import read_prompt_config
    from vpt.data import VisionDataConfig, build_transform, resolve_image_config, with_data_overrides, with_recorded_preprocessing

    model = vpt.load_prompted(folder)
    data = with_recorded_preprocessing(VisionDataConfig(), read_prompt_config(folder).get("preprocessing") or {}, str(folder))
    transform = build_transform(with_data_overrides(resolve_image_config(model.backbone, data.image_size), data))
    out: list[int] = []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([transform(im) for im in images[start : start + batch_size]])
        out += model.forward_batch({"pixel_values": pixels}).argmax(-1).tolist()
    return out


def _left_padded(tokenizer: Any, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@torch.no_grad()
def text_offline(model: Any, texts: list[str], batch_size: int = 16) -> list[Any]:
    """What a ``textpt.load_prompted`` model answers alone: the class index (a classifier: the best verbalizer
    word) or the greedy generation of :data:`VERDICT_MAX_TOKENS` tokens (a generator)."""
    tokenizer, fmt = model.tokenizer, model.input_format
    out: list[Any] = []
    for start in range(0, len(texts), batch_size):
        ids, mask = _left_padded(tokenizer, [fmt.encode(tokenizer, t) for t in texts[start : start + batch_size]])
        if fmt.operation == "classify":
            out += model.class_logits(ids, mask).argmax(-1).tolist()
        else:
            new = model.generate(ids, mask, max_new_tokens=VERDICT_MAX_TOKENS, do_sample=False)
            out += [_until_eos(tokenizer, row) for row in new.tolist()]
    return out


def _until_eos(tokenizer: Any, tokens: list[int]) -> str:
    if tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
    return tokenizer.decode(tokens, skip_special_tokens=True)


def verdict_of(text: str) -> str:
    """The verdict a generation states: its first word, lower-cased."""
    words = text.strip().split()
    return words[0].strip(".,!:;").lower() if words else ""


# ----- serving -------------------------------------------------------------------------------------------------------
def build_service(kind: str, prompts: Path, max_queue: int) -> Any:
    """A prompt service on the backbone the prompt folders in ``prompts`` record (one per kind)."""
    from promptcore.serving import load_serve_config
    from promptcore.serving.app import PromptService

    config = load_serve_config({"kind": kind, "prompts": str(prompts), "max_queue": max_queue})
    service = PromptService.from_config(config)
    if service.load_errors:
        raise SystemExit(f"prompts that failed to load: {service.load_errors}")
    return service


def request_params(operation: str) -> dict[str, Any]:
    """The parameters of a served request: the best class, or a greedy generation as offline."""
    if operation == "classify":
        return {"top_k": 1}
    return {"max_tokens": VERDICT_MAX_TOKENS, "temperature": 0.0}


def served_answer(result: Any) -> Any:
    """A :class:`Classification`'s best class index, or a :class:`Completion`'s text."""
    return result.indices[0] if hasattr(result, "indices") else result.text


def interleaved(tasks: list[ServedTask], count: int) -> list[tuple[ServedTask, int]]:
    """``(task, row)`` pairs, ``count`` rows per task, shuffled so every batch mixes tasks (seeded)."""
    items = [(task, i) for task in tasks for i in range(count)]
    random.Random(SEED).shuffle(items)
    return items


def serve_python(service: Any, tasks: list[ServedTask], rows: dict[str, Rows], count: int, batch_size: int) -> dict[str, list[Any]]:
    """Serves ``count`` held-out rows per task through the server object, in mixed batches of ``batch_size`` rows
    (:meth:`PromptServer.prepare` then one :meth:`PromptServer.run` per batch, which runs the classify rows in one
    backend call and the generate rows in another). Returns each task's answers in row order."""
    server = service.server
    answers: dict[str, list[Any]] = {t.name: [None] * min(count, len(rows[t.name].inputs)) for t in tasks}
    items = [(t, i) for t, i in interleaved(tasks, count) if i < len(answers[t.name])]
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        requests = []
        for task, i in batch:
            operation = server.registry.get(task.name).info.operations[0]
            requests.append(server.prepare(task.name, operation, rows[task.name].inputs[i], request_params(operation)))
        with server.admitted(len(requests)):
            results = server.run(requests)
        for (task, i), result in zip(batch, results):
            answers[task.name][i] = served_answer(result)
    return answers


@contextmanager
def http_server(service: Any) -> Iterator[str]:
    """The service's HTTP app (``promptcore.serving.app.create_app``) served by uvicorn on a free loopback port, in a
    thread; yields its base URL and stops it on exit."""
    import uvicorn

    from promptcore.serving.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the HTTP server did not start on 127.0.0.1")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def serve_http(urls: dict[str, str], tasks: list[ServedTask], rows: dict[str, Rows], count: int, concurrency: int) -> dict[str, list[Any]]:
    """Sends ``count`` held-out rows per task over HTTP, shuffled across tasks, ``concurrency`` requests at a time:
    images base64-encoded to ``/v1/classify``, sentiment texts to ``/v1/classify``, verdicts with the ``openai``
    client to ``/v1/completions`` (greedy). Every answer must be HTTP 200. Returns each task's answers in row order."""
    import httpx
    import openai

    clients = {kind: httpx.Client(base_url=url, timeout=300) for kind, url in urls.items()}
    completions = openai.OpenAI(base_url=urls["textpt"] + "/v1", api_key="unused-on-loopback", timeout=300, max_retries=0)
    answers: dict[str, list[Any]] = {t.name: [None] * min(count, len(rows[t.name].inputs)) for t in tasks}

    def send(item: tuple[ServedTask, int]) -> None:
        task, i = item
        payload = rows[task.name].inputs[i]
        if task.name == "verdict":
            reply = completions.completions.create(model=task.name, prompt=payload, **request_params("generate"))
            answers[task.name][i] = reply.choices[0].text
            return
        body = {"model": task.name, "input": png_base64(payload) if task.package == "vpt" else payload, "top_k": 1}
        response = clients[task.package].post("/v1/classify", json=body)
        if response.status_code != 200:
            raise SystemExit(f"{task.name}: HTTP {response.status_code}: {response.text}")
        answers[task.name][i] = response.json()["data"][0]["labels"][0]["class_index"]

    items = [(t, i) for t, i in interleaved(tasks, count) if i < len(answers[t.name])]
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, items))
    finally:
        for client in clients.values():
            client.close()
        completions.close()
    return answers


# ----- the report ----------------------------------------------------------------------------------------------------
@dataclass
class TaskResult:
    task: ServedTask
    classes: list[str]
    correct: int
    rows: int
    matched_python: int
    served_python: int
    matched_http: int
    served_http: int
    kb: float


def write_report(results: list[TaskResult], path: Path, machine: str, timings: dict[str, float], sizes: Sizes, tiny: bool) -> str:
    """Writes the report's markdown to ``path`` and returns its table."""
    lines = [
        "| task | backbone | method | classes | held-out accuracy [95% interval] | served = offline (Python API) | served = offline (HTTP) | prompt file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        low, high = binomial_interval(r.correct, r.rows)
        backbone = "EfficientNet-Lite0" if r.task.package == "vpt" else "SmolLM2-135M-Instruct"
        lines.append(
            f"| `{r.task.name}`: {r.task.title} | {backbone} | {r.task.method} | {len(r.classes)} | "
            f"{r.correct / r.rows:.1%} [{low:.1%}, {high:.1%}] of {r.rows} | {r.matched_python} / {r.served_python} | "
            f"{r.matched_http} / {r.served_http} | {r.kb:.1f} KB |"
        )
    table = "\n".join(lines)
    total = sum(timings.values())
    phases = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in timings.items())
    banner = "**A `--tiny` run: a few training steps and rows, which checks the pipeline; its accuracies mean nothing.**\n\n"
    text = f"""# Serving demo report

{banner if tiny else ""}Five prompts trained on packaged models and data (`configs/serving_demo/`), then served together: the three vision
prompts on one EfficientNet-Lite0, the two text prompts on one SmolLM2-135M-Instruct (`docs/serving_demo.md`).

{table}

- **Accuracy**: the prompt folder's own model (`vpt.load_prompted` / `textpt.load_prompted`, run alone) on held-out
  rows: a seeded subset of {sizes.eval_rows['vpt']} images of Fashion-MNIST's test split (regrouped as the task's
  config says), the first {sizes.eval_rows['textpt']} rows of the rotten_tomatoes test split; a verdict counts when
  the generation's first word is the true one. Brackets: the 95% Wilson interval (`demo.stats.binomial_interval`).
- **Served = offline**: requests whose served answer (the best class; the generated text, greedy) equals that
  model's offline answer for the same row. Python API: {sizes.served_python} rows per task in mixed batches of
  {sizes.batch_size} (`PromptServer.prepare` + `PromptServer.run`); HTTP: {sizes.served_http} rows per task through the
  server's FastAPI app on 127.0.0.1 (uvicorn), {sizes.concurrency} requests in flight, shuffled across tasks
  (`/v1/classify` for images and sentiment, `/v1/completions` with the `openai` client for the verdict).
- **Prompt file**: the prompt folder's files (tensors and `prompt_config.json`) as served.

Machine: {machine}. Wall time {total / 60:.1f} min ({phases}).
"""
    path.write_text(text)
    return table


def machine_line(load_before: float) -> str:
    line = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    line += ", CUDA" if torch.cuda.is_available() else ""
    return line + f" (1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)"


def run(out: Path, sizes: Sizes, tiny: bool, report: Path) -> list[TaskResult]:
    """The whole demo: train, evaluate offline, serve, compare, report."""
    load_before = os.getloadavg()[0]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    files = write_verdict_data(out / "data")
    verdict_sets = [f"data.data_files.train={files['train']}", f"data.data_files.test={files['test']}"]
    folders: dict[str, Path] = {}
    for task in TASKS:
        extra = sizes.overrides.get(task.package, []) + (verdict_sets if task.name == "verdict" else [])
        trained = train(task, out / "runs", extra)
        folders[task.name] = out / "prompts" / task.package / task.name  # the server's prompt directories
        shutil.rmtree(folders[task.name], ignore_errors=True)
        shutil.copytree(trained, folders[task.name])
    timings["training"] = time.perf_counter() - start

    start = time.perf_counter()
    print("\n== held-out rows and offline predictions (each prompt alone)", flush=True)
    rows = {t.name: (vision_rows if t.package == "vpt" else text_rows)(t, sizes.eval_rows[t.package]) for t in TASKS}
    offline: dict[str, list[Any]] = {}
    text_model = None
    for task in TASKS:
        if task.package == "vpt":
            offline[task.name] = vision_offline(folders[task.name], rows[task.name].inputs)
        else:
            import textpt

            # the first text prompt builds the backbone its folder records; the second goes on that one
            text_model = textpt.load_prompted(folders[task.name], *((text_model.backbone, text_model.tokenizer) if text_model else ()))
            offline[task.name] = text_offline(text_model, rows[task.name].inputs)
    timings["offline evaluation"] = time.perf_counter() - start

    start = time.perf_counter()
    print("\n== serving: vision prompts on one backbone, text prompts on another", flush=True)
    by_kind = {"vpt": [t for t in TASKS if t.package == "vpt"], "textpt": [t for t in TASKS if t.package == "textpt"]}
    queue = max(sizes.batch_size, sizes.concurrency) * 4
    services = {"vpt": build_service("vision", out / "prompts" / "vpt", queue), "textpt": build_service("text", out / "prompts" / "textpt", queue)}
    python_answers: dict[str, list[Any]] = {}
    for kind, tasks in by_kind.items():
        python_answers.update(serve_python(services[kind], tasks, rows, sizes.served_python, sizes.batch_size))
    with http_server(services["vpt"]) as vision_url, http_server(services["textpt"]) as text_url:
        http_answers = serve_http({"vpt": vision_url, "textpt": text_url}, TASKS, rows, sizes.served_http, sizes.concurrency)
    timings["serving"] = time.perf_counter() - start

    results = []
    for task in TASKS:
        truth, predicted = rows[task.name].labels, offline[task.name]
        if task.name == "verdict":
            correct = sum(verdict_of(p) == y for p, y in zip(predicted, truth))
        else:
            correct = sum(int(p) == int(y) for p, y in zip(predicted, truth))
        served_py, served_web = python_answers[task.name], http_answers[task.name]
        classes = services[task.package].server.registry.get(task.name).info.classes or sorted(set(truth))  # a generator: the words it writes
        results.append(TaskResult(
            task, classes,
            correct, len(truth),
            sum(a == predicted[i] for i, a in enumerate(served_py)), len(served_py),
            sum(a == predicted[i] for i, a in enumerate(served_web)), len(served_web),
            folder_kb(folders[task.name]),
        ))  # fmt: skip
    table = write_report(results, report, machine_line(load_before), timings, sizes, tiny)
    print("\n" + table)
    mismatched = [r.task.name for r in results if r.matched_python != r.served_python or r.matched_http != r.served_http]
    if mismatched:
        print(f"\nserved answers differ from the offline predictions for: {', '.join(mismatched)} (see {report})", flush=True)
    print(f"\nwrote {report} in {sum(timings.values()) / 60:.1f} min", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python demo/serving_demo.py`` (``make serving-demo``); exit status 1 when a served answer
    differs from its prompt's offline prediction."""
    parser = argparse.ArgumentParser(prog="demo/serving_demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "demo" / "runs" / "serving"), help="where runs, prompts and data go")
    parser.add_argument("--report", default=None, help="the report's path (default: demo/serving_report.md; --tiny: OUT/serving_report.md)")
    parser.add_argument("--tiny", action="store_true", help="a few steps and rows: checks the pipeline in about a minute")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = Path(args.report) if args.report else (out / "serving_report.md" if args.tiny else ROOT / "demo" / "serving_report.md")
    results = run(out, TINY if args.tiny else FULL, args.tiny, report)
    return int(any(r.matched_python != r.served_python or r.matched_http != r.served_http for r in results))


if __name__ == "__main__":
    sys.exit(main())
