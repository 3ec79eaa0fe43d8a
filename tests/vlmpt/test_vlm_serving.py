"""``vlmpt serve`` in-process: a mixed batch of prompts of different methods answers each request as ``vlmpt generate``
answers it offline (greedy), over the Python API and the HTTP app; foreign and classify prompts are listed as
failed; malformed requests get one 400 naming the field."""

import base64
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import vlmpt
from promptcore import load_config
from promptcore.serving import load_serve_config
from promptcore.serving.app import PromptService, create_app
from promptcore.trainer import seed_everything
from vlmpt.cli import VLMRecipe
from vlmpt.run_config import VLMRunConfig
from vlmpt.serving import mix_key
from vlmpt.synthetic import synthetic_rows

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "vlmpt_tiny.yaml")
QUESTION = "what colour is it ?"


def save_prompt(folder: Path, *overrides: str) -> Path:
    """An untrained prompt folder as ``vlmpt train`` writes it (the smoke config with ``overrides``)."""
    cfg = load_config(VLMRunConfig, SMOKE, ["data.num_samples=8", "data.eval_split=null", "train.seed=3", *overrides])
    seed_everything(cfg.train.seed)
    return VLMRecipe().build_model(cfg).save_prompts(folder)


def data_url(image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def messages(image, question: str | None = QUESTION) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": data_url(image)}}]
    return [{"role": "user", "content": parts + ([{"type": "text", "text": question}] if question is not None else [])}]


def offline(folder: Path, image, max_new_tokens: int) -> str:
    """What ``vlmpt generate --prompts FOLDER`` writes: the model rebuilt from the folder alone."""
    return vlmpt.answer(vlmpt.load_prompted(folder), [image], QUESTION, max_new_tokens)[0]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen") / "prompts"
    save_prompt(root / "tuned_a", "prompt.seed=1")
    save_prompt(root / "prefix", "prompt.method=vlm_prefix", "prompt.num_tokens=3", "prompt.init_std=1.0")
    save_prompt(root / "tuned_b", "prompt.seed=2")
    save_prompt(root / "classifier", "task.type=classify", "data.label_column=label")
    save_prompt(root / "zforeign", "train.seed=4")  # the same architecture, other weights; sorts last
    return PromptService.from_config(load_serve_config({"kind": "vision-language", "prompts": str(root)})), root


def test_a_mixed_batch_of_prompts_answers_each_as_vlmpt_generate(qwen):
    service, root = qwen
    images = synthetic_rows(3, seed=1, split="test")["image"]
    items = [("tuned_a", images[0]), ("prefix", images[1]), ("tuned_b", images[2]), ("tuned_a", images[1]), ("tuned_b", images[1])]
    registry = service.server.registry
    # prompt tuning rows of both prompts share one forward; the prefix rows run in another
    assert mix_key(registry.get("tuned_a").model) == mix_key(registry.get("tuned_b").model) != mix_key(registry.get("prefix").model)
    got = service.server.generate([(name, messages(image)) for name, image in items], max_tokens=5, temperature=0)
    want = [offline(root / name, image, 5) for name, image in items]
    assert [c.text for c in got] == want
    assert want[3] != want[4]  # the same image with two prompts of one shape: each row had its own prompt
    assert all(c.finish_reason == "length" and len(c.token_ids) == 5 for c in got)

    client = TestClient(create_app(service))
    body = {"model": "prefix", "messages": messages(images[2]), "max_tokens": 4, "temperature": 0}
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    text = reply.json()["choices"][0]["message"]["content"]
    assert text == offline(root / "prefix", images[2], 4)
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == text
    stop = text.split()[1]
    cut = client.post("/v1/chat/completions", json={**body, "stop": [stop]}).json()["choices"][0]
    assert (cut["message"]["content"], cut["finish_reason"]) == (text[: text.index(stop)], "stop")

    failed = client.get("/health").json()["failed"]
    assert sorted(failed) == ["classifier", "zforeign"]
    assert "classify task; this server generates answers only" in failed["classifier"]
    assert "the prompt was trained on other weights" in failed["zforeign"]


def test_bad_requests_get_one_400_naming_the_field(qwen):
    service, _ = qwen
    client = TestClient(create_app(service))
    image = synthetic_rows(1, seed=2)["image"][0]

    def error(message_list, status=400, **extra):
        reply = client.post("/v1/chat/completions", json={"model": "tuned_a", "messages": message_list, "max_tokens": 2, "temperature": 0, **extra})
        assert reply.status_code == status, reply.text
        return reply.json()["error"]

    e = error([{"role": "user", "content": QUESTION}])
    assert e["param"] == "messages" and "0 image parts; a prompt answers about exactly one image" in e["message"]
    text_url = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}, {"type": "text", "text": QUESTION}]}]
    e = error(text_url)
    assert e["param"] == "messages" and "messages[0].content[0].image_url.url: a data URL of type 'text/plain', not an image" in e["message"]
    not_png = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]}]
    assert "is not an image file PIL can read" in error(not_png)["message"]
    remote = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
    assert "fetches no remote images" in error(remote)["message"]
    assert "add a text part with the question" in error(messages(image, None))["message"]
    for temperature in (0.7, None):  # None: left out, which OpenAI's API takes as 1
        e = error(messages(image), temperature=temperature)
        assert e["param"] == "temperature" and "answer greedily" in e["message"]
    e = client.post("/v1/completions", json={"model": "tuned_a", "prompt": QUESTION, "temperature": 0}).json()["error"]
    assert e["param"] == "prompt" and "needs an image" in e["message"]
    two_turns = [*messages(image), {"role": "user", "content": QUESTION}]
    assert "one user message with one image" in error(two_turns)["message"]


def test_llava_vision_tower_prompts_run_one_prompt_per_forward(tmp_path):
    root = tmp_path / "prompts"
    llava = ["model.name=random:llava"]
    save_prompt(root / "tuned", *llava)
    save_prompt(root / "vpt", *llava, "prompt.method=vlm_vpt", "prompt.deep=true", "prompt.init_std=1.0")
    service = PromptService.from_config(load_serve_config({"kind": "vision-language", "prompts": str(root)}))
    tuned, vpt = (service.server.registry.get(n).model for n in ("tuned", "vpt"))
    assert mix_key(vpt) == ("alone", id(vpt)) != mix_key(tuned)
    images = synthetic_rows(2, seed=3, split="test")["image"]
    items = [("vpt", images[0]), ("tuned", images[1]), ("vpt", images[1])]
    got = service.server.generate([(name, messages(image)) for name, image in items], max_tokens=4, temperature=0)
    assert [c.text for c in got] == [offline(root / name, image, 4) for name, image in items]
