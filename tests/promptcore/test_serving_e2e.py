"""Real tiny ``vpt`` and ``textpt`` prompts served through the HTTP app: every answer equals the offline prediction of
its prompt (the ordinary prompted model rebuilt from the folder alone)."""

import base64
import io
from pathlib import Path

import openai
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from promptcore.serving import load_serve_config
from promptcore.serving.app import PromptService, create_app

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def train(prog: str, out: Path, *overrides: str) -> Path:
    """A two-step smoke run of ``prog``; returns its prompt folder."""
    main = __import__(f"{prog}.cli", fromlist=["main"]).main
    config = ROOT / "configs" / "smoke" / f"{prog}_tiny.yaml"
    sets = [x for o in ("train.max_steps=2", *overrides) for x in ("--set", o)]
    assert main(["train", "-c", str(config), "-o", str(out), *sets]) == 0
    return out / "last"


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_vision_prompts_of_two_methods_served_in_one_app(tmp_path):
    vpt = pytest.importorskip("vpt")
    root = tmp_path / "prompts"
    root.mkdir()
    train("vpt", tmp_path / "deep").rename(root / "deep")
    train("vpt", tmp_path / "shallow", "prompt.method=vpt_shallow", "prompt.num_tokens=2").rename(root / "shallow")
    service = PromptService.from_config(load_serve_config({"kind": "vision", "prompts": str(root)}))
    client = TestClient(create_app(service))
    assert sorted(m["id"] for m in client.get("/v1/models").json()["data"]) == ["deep", "shallow"]
    images = [png((200, 30, 30)), png((20, 200, 90), (64, 48)), png((10, 10, 250))]
    for name in ("deep", "shallow"):
        model = vpt.load_prompted(root / name)
        backend = service.server.backend
        prompt = backend.open_prompt(root / name, name)
        reply = client.post("/v1/classify", data={"model": name, "top_k": "3"}, files=[("input", (f"{i}.png", b)) for i, b in enumerate(images)])
        assert reply.status_code == 200, reply.text
        as_json = client.post("/v1/classify", json={"model": name, "top_k": 3, "input": [base64.b64encode(b).decode() for b in images]})
        assert as_json.json()["data"] == reply.json()["data"]
        for item, image in zip(reply.json()["data"], images):
            pixels = backend.prepare(prompt, "classify", image, {"top_k": 3}).input
            with torch.no_grad():
                probs = torch.softmax(model(pixels[None]).float(), -1)[0]
            top = torch.topk(probs, 3)
            assert [x["class_index"] for x in item["labels"]] == top.indices.tolist()
            assert [x["score"] for x in item["labels"]] == pytest.approx(top.values.tolist(), abs=1e-5)
    bad = client.post("/v1/classify", data={"model": "deep"}, files=[("input", ("x.png", b"not an image"))])
    assert bad.status_code == 400 and "image" in bad.json()["error"]["message"]


def test_text_prompts_classify_and_complete_with_the_openai_client(tmp_path):
    textpt = pytest.importorskip("textpt")
    root = tmp_path / "prompts"
    root.mkdir()
    train("textpt", tmp_path / "reviews").rename(root / "reviews")
    train("textpt", tmp_path / "writer", "data.target_column=label").rename(root / "writer")
    service = PromptService.from_config(load_serve_config({"kind": "text", "prompts": str(root)}))
    client = TestClient(create_app(service))
    texts = ["a wonderful film", "a terrible plot with terrible actors"]
    reply = client.post("/v1/classify", json={"model": "reviews", "input": texts, "top_k": 2})
    assert reply.status_code == 200, reply.text
    reviews = textpt.load_prompted(root / "reviews")
    for item, text in zip(reply.json()["data"], texts):
        ids = reviews.input_format.encode(reviews.tokenizer, text)
        with torch.no_grad():
            probs = torch.softmax(reviews.class_logits(torch.tensor([ids])).float(), -1)[0]
        assert [x["label"] for x in item["labels"]] == [reviews.input_format.class_names[i] for i in torch.argsort(probs, descending=True).tolist()]
        assert sorted(x["score"] for x in item["labels"]) == pytest.approx(sorted(probs.tolist()), abs=1e-5)

    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    writer = textpt.load_prompted(root / "writer")
    for text in texts:
        ids = writer.input_format.encode(writer.tokenizer, text)
        with torch.no_grad():
            out = writer.generate(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=6, do_sample=False)
        expected = writer.tokenizer.decode(out[0], skip_special_tokens=True)  # generate returns the new tokens
        got = api.completions.create(model="writer", prompt=text, max_tokens=6, temperature=0)
        streamed = "".join(c.choices[0].text for c in api.completions.create(model="writer", prompt=text, max_tokens=6, temperature=0, stream=True))
        assert got.choices[0].text == streamed
        assert got.choices[0].text == expected
    with pytest.raises(openai.NotFoundError, match="Did you mean 'writer'"):
        api.completions.create(model="writr", prompt="x")
