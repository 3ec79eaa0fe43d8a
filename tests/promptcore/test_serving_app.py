"""The HTTP API in-process (FastAPI TestClient, the ``openai`` client): every endpoint and every error of the table."""

import asyncio
import base64
import json
import threading
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from serving_toy import ToyBackend, ToyVisionBackend, build_toy, make_prompt
from waiting import wait_for

from promptcore.errors import UserError
from promptcore.serving import ServeConfig, load_serve_config
from promptcore.serving.app import PromptService, create_app


def make_service(tmp_path, kind="text", **overrides):
    backend = ToyVisionBackend() if kind == "vision" else ToyBackend()
    root = tmp_path / "prompts"
    if not root.exists():
        for i, (name, classes) in enumerate([("sentiment", 2), ("topic", 4), ("writer", None)]):
            make_prompt(root / name, backend, length=1 + i, num_classes=classes, seed=i)
        make_prompt(root / "foreign", ToyBackend(seed=3), length=2, num_classes=2, seed=0)
    config = load_serve_config({"kind": kind, "model": {"kind": kind}, "prompts": str(root), **overrides})
    return PromptService.from_config(config, build_toy)


def reference(service, name, payload, operation="classify", **params):
    backend = type(service.server.backend)()
    prompt = backend.open_prompt(service.server.registry.directory / name, name)
    request = backend.prepare(prompt, operation, payload, params)
    return backend.classify([request])[0] if operation == "classify" else request


@pytest.fixture
def service(tmp_path):
    return make_service(tmp_path)


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_health_reports_the_prompts_that_failed_to_load(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["prompts"] == 3
    assert "other weights" in body["failed"]["foreign"]


def test_models_lists_name_method_task_classes_and_size(client, service):
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert sorted(cards) == ["sentiment", "topic", "writer"]
    info = service.server.registry.get("topic").info
    assert cards["topic"]["classes"] == info.classes and len(info.classes) == 4
    assert (cards["topic"]["method"], cards["topic"]["task"], cards["topic"]["size_bytes"]) == ("toy", "classification", info.nbytes)
    assert cards["writer"]["operations"] == ["generate"] and cards["writer"]["classes"] is None
    assert client.get("/v1/models/writer").json()["id"] == "writer"


def test_classify_text_answers_top_k_per_input_as_the_prompt_alone(client, service):
    reply = client.post("/v1/classify", json={"model": "topic", "input": ["a news story", "sports"], "top_k": 3})
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    for item, text in zip(data, ["a news story", "sports"]):
        expected = reference(service, "topic", text, top_k=3)
        assert [x["label"] for x in item["labels"]] == expected.labels
        assert [x["score"] for x in item["labels"]] == pytest.approx(expected.scores, abs=1e-6)
        assert [x["class_index"] for x in item["labels"]] == expected.indices


def test_classify_images_multipart_and_base64(tmp_path):
    service = make_service(tmp_path, kind="vision")
    client = TestClient(create_app(service))
    image = b"IMG" + bytes(range(40))
    expected = reference(service, "topic", image, top_k=2)
    multipart = client.post("/v1/classify", data={"model": "topic", "top_k": "2"}, files=[("input", ("a.png", image)), ("input", ("b.png", image))])
    assert multipart.status_code == 200, multipart.text
    as_json = client.post("/v1/classify", json={"model": "topic", "top_k": 2, "input": "data:image/png;base64," + base64.b64encode(image).decode()})
    for item in multipart.json()["data"] + as_json.json()["data"]:
        assert [x["label"] for x in item["labels"]] == expected.labels
    assert len(multipart.json()["data"]) == 2
    assert error_of(client.post("/v1/classify", json={"model": "topic", "input": "not base64!"}), 400)["param"] == "input"
    assert "not an image" in error_of(client.post("/v1/classify", json={"model": "topic", "input": base64.b64encode(b"GIF89a").decode()}), 400)["message"]
    assert error_of(client.post("/v1/classify", data={"model": "topic"}, files=[("other", ("a.png", image))]), 400)["param"] == "input"
    assert error_of(client.post("/v1/classify", data={"model": "topic", "top_k": "two"}, files=[("input", ("a.png", image))]), 400)["param"] == "top_k"


def test_limits_answer_413(tmp_path):
    service = make_service(tmp_path, kind="vision", limits={"max_image_pixels": 10, "max_top_k": 3, "max_body_bytes": 2000, "max_inputs": 2})
    client = TestClient(create_app(service))
    small, big = b"IMG" + bytes(5), b"IMG" + bytes(11)
    assert client.post("/v1/classify", data={"model": "topic"}, files=[("input", ("a", small))]).status_code == 200
    assert "11 pixels" in error_of(client.post("/v1/classify", data={"model": "topic"}, files=[("input", ("a", big))]), 413)["message"]
    assert error_of(client.post("/v1/classify", json={"model": "topic", "input": base64.b64encode(small).decode(), "top_k": 4}), 413)["param"] == "top_k"
    three = [base64.b64encode(small).decode()] * 3
    assert error_of(client.post("/v1/classify", json={"model": "topic", "input": three}), 413)["param"] == "input"
    assert "over this server's limit of 2000 bytes" in error_of(client.post("/v1/classify", content=b"x" * 3000), 413)["message"]

    def chunked():
        yield b'{"model": "topic", "input": "'
        yield b"A" * 3000
        yield b'"}'

    assert error_of(client.post("/v1/classify", content=chunked(), headers={"content-type": "application/json"}), 413)["code"] == "limit_exceeded"


def test_text_limits_answer_413(tmp_path):
    client = TestClient(create_app(make_service(tmp_path, limits={"max_input_tokens": 5, "max_new_tokens": 4})))
    assert "6 tokens" in error_of(client.post("/v1/classify", json={"model": "topic", "input": "sixsix"}), 413)["message"]
    assert error_of(client.post("/v1/completions", json={"model": "writer", "prompt": "hi", "max_tokens": 5}), 413)["param"] == "max_tokens"
    assert client.post("/v1/completions", json={"model": "writer", "prompt": "hi", "max_tokens": 4}).status_code == 200


def test_bad_requests_answer_400_naming_the_field(client):
    assert error_of(client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"}), 400)["code"] == "invalid_json"
    assert "must be a JSON object" in error_of(client.post("/v1/classify", json=[1, 2]), 400)["message"]
    assert error_of(client.post("/v1/classify", json={"input": "hi"}), 400)["param"] == "model"
    assert error_of(client.post("/v1/classify", json={"model": "topic", "input": 3}), 400)["param"] == "input"
    assert error_of(client.post("/v1/classify", json={"model": "topic", "input": "hi", "top_k": "3"}), 400)["param"] == "top_k"
    assert error_of(client.post("/v1/classify", json={"model": "topic", "input": "hi", "top_k": True}), 400)["param"] == "top_k"
    assert error_of(client.post("/v1/classify", json={"model": "topic", "input": "hi", "top_k": 0}), 400)["param"] == "top_k"
    assert error_of(client.post("/v1/completions", json={"model": "writer", "prompt": "hi", "temperature": 3}), 400)["param"] == "temperature"
    assert error_of(client.post("/v1/completions", json={"model": "writer", "prompt": "hi", "n": 2}), 400)["param"] == "n"
    assert error_of(client.post("/v1/completions", json={"model": "writer", "prompt": "hi", "logprobs": 2}), 400)["param"] == "logprobs"
    assert error_of(client.post("/v1/completions", json={"model": "writer", "prompt": ["hi", 3]}), 400)["param"] == "prompt"
    assert error_of(client.post("/v1/chat/completions", json={"model": "writer", "messages": [{"role": "user"}]}), 400)["param"] == "messages"
    assert "answers generate, not classify" in error_of(client.post("/v1/classify", json={"model": "writer", "input": "hi"}), 400)["message"]
    assert error_of(client.get("/v1/nothing"), 404)["code"] == "not_found"


def test_an_unknown_prompt_is_404_naming_close_matches(client):
    error = error_of(client.post("/v1/classify", json={"model": "topc", "input": "hi"}), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "Did you mean 'topic'?" in error["message"]
    assert "Did you mean 'writer'?" in error_of(client.post("/v1/completions", json={"model": "writter", "prompt": "hi"}), 404)["message"]


def test_completions_and_chat_with_the_openai_client(client, service):
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    reply = api.completions.create(model="writer", prompt="once upon", max_tokens=6, temperature=0)
    expected = service.server.complete([reference(service, "writer", "once upon", "generate", max_tokens=6, temperature=0.0)])[0]
    assert reply.choices[0].text == expected.text and reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == len("once upon") and reply.usage.completion_tokens == len(expected.token_ids)

    streamed = list(api.completions.create(model="writer", prompt="once upon", max_tokens=6, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == expected.text
    assert streamed[-1].choices[0].finish_reason == expected.finish_reason

    messages = [{"role": "user", "content": "hello"}]
    chat = api.chat.completions.create(model="writer", messages=messages, max_tokens=5, temperature=0)
    expected_chat = service.server.complete([reference(service, "writer", messages, "generate", max_tokens=5, temperature=0.0)])[0]
    assert chat.choices[0].message.content == expected_chat.text and chat.choices[0].message.role == "assistant"
    chunks = list(api.chat.completions.create(model="writer", messages=messages, max_tokens=5, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_chat.text
    assert chunks[-1].usage.completion_tokens == len(expected_chat.token_ids)
    with pytest.raises(openai.NotFoundError, match="Did you mean 'writer'"):
        api.completions.create(model="writr", prompt="x")
    assert [m.id for m in api.models.list()] == ["sentiment", "topic", "writer"]


def test_a_stream_is_server_sent_events_ending_with_done(client):
    with client.stream("POST", "/v1/completions", json={"model": "writer", "prompt": ["a", "bc"], "max_tokens": 3, "stream": True, "temperature": 0}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}


def test_auth_bearer_tokens_and_a_separate_admin_token(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTTUNE_API_KEY", "user-key")
    monkeypatch.setenv("PROMPTTUNE_ADMIN_KEY", "admin-key")
    client = TestClient(create_app(make_service(tmp_path)))
    body = {"model": "topic", "input": "hi"}
    assert error_of(client.post("/v1/classify", json=body), 401)["type"] == "authentication_error"
    assert error_of(client.post("/v1/classify", json=body, headers={"Authorization": "Bearer nope"}), 401)["code"] == "invalid_api_key"
    assert error_of(client.get("/v1/models", headers={"Authorization": "Basic user-key"}), 401)
    assert client.post("/v1/classify", json=body, headers={"Authorization": "Bearer user-key"}).status_code == 200
    assert error_of(client.get("/metrics"), 401)
    assert client.get("/health").status_code == 200  # probes need no token
    user = {"Authorization": "Bearer user-key"}
    assert error_of(client.delete("/admin/prompts/topic", headers=user), 401)["message"] == "wrong admin API key"
    assert client.delete("/admin/prompts/topic", headers={"Authorization": "Bearer admin-key"}).json()["deleted"] is True
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="user-key", http_client=client)
    assert [m.id for m in api.models.list()] == ["sentiment", "writer"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key="bad", http_client=client).models.list()


def test_binding_beyond_loopback_needs_a_token(monkeypatch):
    monkeypatch.delenv("PROMPTTUNE_API_KEY", raising=False)
    ServeConfig(host="127.0.0.1").check_exposure()
    ServeConfig(host="::1").check_exposure()
    with pytest.raises(UserError, match=r"host '0.0.0.0' is reachable from other machines: set an API key in \$PROMPTTUNE_API_KEY"):
        ServeConfig(host="0.0.0.0").check_exposure()
    monkeypatch.setenv("PROMPTTUNE_API_KEY", "k")
    ServeConfig(host="0.0.0.0").check_exposure()
    monkeypatch.setenv("PROMPTTUNE_ADMIN_KEY", "k")
    with pytest.raises(UserError, match="hold the same token"):
        ServeConfig(host="0.0.0.0").check_exposure()


def test_admin_endpoints_are_off_beyond_loopback_without_an_admin_token(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTTUNE_API_KEY", "user-key")
    client = TestClient(create_app(make_service(tmp_path, host="0.0.0.0")))
    error = error_of(client.get("/admin/prompts", headers={"Authorization": "Bearer user-key"}), 403)
    assert "set $PROMPTTUNE_ADMIN_KEY" in error["message"]


def test_admin_load_and_unload_by_name_inside_the_prompt_directory(client, service, tmp_path):
    make_prompt(tmp_path / "prompts" / "fresh", service.server.backend, length=2, num_classes=3, seed=42)
    loaded = client.post("/admin/prompts", json={"name": "fresh"})
    assert loaded.status_code == 201 and loaded.json()["id"] == "fresh"
    assert client.post("/v1/classify", json={"model": "fresh", "input": "hi"}).status_code == 200
    assert "already served" in error_of(client.post("/admin/prompts", json={"name": "fresh"}), 400)["message"]
    assert client.post("/admin/prompts", json={"name": "fresh", "replace": True}).status_code == 201
    assert error_of(client.post("/admin/prompts", json={"name": "../prompts/fresh"}), 400)["param"] == "name"
    assert "absolute path" in error_of(client.post("/admin/prompts", json={"name": "/etc"}), 400)["message"]
    assert "other weights" in error_of(client.post("/admin/prompts", json={"name": "foreign"}), 400)["message"]
    assert "Did you mean 'fresh'" in error_of(client.post("/admin/prompts", json={"name": "frsh"}), 404)["message"]
    assert client.get("/admin/prompts").json()["served"] == ["fresh", "sentiment", "topic", "writer"]
    assert client.delete("/admin/prompts/fresh").status_code == 200
    assert error_of(client.post("/v1/classify", json={"model": "fresh", "input": "hi"}), 404)
    assert error_of(client.delete("/admin/prompts/fresh"), 404)["code"] == "model_not_found"
    assert client.post("/v1/classify", json={"model": "topic", "input": "hi"}).status_code == 200


def test_queue_full_is_503_with_retry_after_and_memory_stays_bounded(tmp_path):
    service = make_service(tmp_path, max_queue=2)
    app = create_app(service)
    service.server.backend.gate.clear()

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            held = asyncio.create_task(c.post("/v1/classify", json={"model": "topic", "input": ["a", "b"]}))
            for _ in range(6000):  # at most 60 s
                if service.server.held >= 2 or held.done():
                    break
                await asyncio.sleep(0.01)
            assert service.server.held == 2, "the first request was not held in the queue"
            refused = await c.post("/v1/classify", json={"model": "topic", "input": "c"})
            service.server.backend.gate.set()
            return refused, await held

    refused, held = asyncio.run(scenario())
    error = error_of(refused, 503)
    assert refused.headers["retry-after"] == "1" and error["code"] == "overloaded"
    assert held.status_code == 200 and service.server.held == 0


def test_metrics_count_requests_batches_and_prompts(client):
    client.post("/v1/classify", json={"model": "topic", "input": ["a", "b", "c"]})
    client.post("/v1/classify", json={"model": "nope", "input": "a"})
    client.post("/v1/completions", json={"model": "writer", "prompt": "a", "max_tokens": 2})
    text = client.get("/metrics").text
    assert 'prompttune_requests_total{operation="classify",prompt="topic",status="200"} 1.0' in text
    assert 'prompttune_requests_total{operation="classify",prompt="(unknown)",status="404"} 1.0' in text
    assert 'prompttune_batch_size_sum{operation="classify"} 3.0' in text
    assert 'prompttune_request_latency_seconds_count{operation="generate"} 1.0' in text
    assert "prompttune_loaded_prompts 3.0" in text and "prompttune_queue_length 0.0" in text


def test_a_removal_during_a_request_does_not_fail_it(client, service):
    service.server.backend.gate.clear()
    replies = []
    t = threading.Thread(target=lambda: replies.append(client.post("/v1/classify", json={"model": "topic", "input": "hi"})))
    t.start()
    wait_for(lambda: service.server.held >= 1, "the request admitted", alive=t.is_alive)
    service.server.registry.remove("topic")
    service.server.backend.gate.set()
    t.join(timeout=60)
    assert replies[0].status_code == 200


def test_serve_run_builds_the_application_from_a_serve_config_and_its_overrides(monkeypatch):
    pytest.importorskip("ray")
    from ray.serve import Application

    from promptcore.serving.app import app_builder

    monkeypatch.delenv("PROMPTTUNE_API_KEY", raising=False)
    config = str(Path(__file__).resolve().parents[2] / "configs" / "serve" / "vision.yaml")
    assert isinstance(app_builder({"config": config, "num_replicas": "2", "max_batch_size": "8"}), Application)
    with pytest.raises(UserError, match="reachable from other machines"):
        app_builder({"config": config, "host": "0.0.0.0"})
    with pytest.raises(UserError, match="num_replicas"):
        app_builder({"config": config, "num_replicas": "0"})
