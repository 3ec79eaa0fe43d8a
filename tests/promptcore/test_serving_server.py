"""The prompt server without HTTP: mixed batches in order, one backend call per operation, the bounded queue, drain."""

import threading
import time

import pytest
import torch
from serving_toy import ToyBackend, make_prompt
from waiting import wait_for

from promptcore.errors import UserError
from promptcore.serving import Completion, PromptRegistry, PromptServer, QueueFullError


@pytest.fixture
def served(tmp_path):
    def build(dtype=torch.float32, **server_kwargs):
        backend = ToyBackend(dtype=dtype)
        root = tmp_path / "prompts"
        for i, (name, classes) in enumerate([("a", 2), ("b", 5), ("c", 3), ("writer", None), ("poet", None)]):
            if not (root / name).exists():
                make_prompt(root / name, backend, length=1 + 2 * i, num_classes=classes, seed=i)
        registry = PromptRegistry(backend, root)
        registry.load_directory()
        return PromptServer(backend, registry, **server_kwargs)

    return build


def alone(server, name, text, **params):
    """What one request gives run by itself, on a fresh backend."""
    backend = ToyBackend(dtype=server.backend.dtype)
    prompt = backend.open_prompt(server.registry.directory / name, name)
    request = backend.prepare(prompt, prompt.info.operations[0], text, params)
    if prompt.info.operations[0] == "classify":
        return backend.classify([request])[0]
    return PromptServer(backend, PromptRegistry(backend)).complete([request])[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_mixed_batch_answers_each_row_as_its_prompt_alone(served, dtype):
    server = served(dtype)
    items = [("b", "a long review text"), ("a", "hi"), ("c", "x"), ("a", "another one"), ("b", "ok")]
    got = server.predict(items, top_k=2)
    assert [c.labels for c in got] == [alone(server, n, t, top_k=2).labels for n, t in items]
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    for (name, text), c in zip(items, got):
        assert max(abs(x - y) for x, y in zip(c.scores, alone(server, name, text, top_k=2).scores)) <= tolerance
    assert server.backend.calls == [("classify", ["b", "a", "c", "a", "b"])]  # one forward for the whole mix


def test_predict_groups_a_batch_by_operation_one_backend_call_each(served):
    server = served()
    items = [("writer", "once upon"), ("a", "hi"), ("poet", "roses"), ("b", "ok")]
    got = server.predict(items, top_k=1, max_tokens=5, temperature=0.0)
    assert server.backend.calls == [("classify", ["a", "b"]), ("generate", ["writer", "poet"])]
    assert isinstance(got[0], Completion) and isinstance(got[2], Completion)
    assert got[1].labels == alone(server, "a", "hi", top_k=1).labels
    for i in (0, 2):
        expected = alone(server, items[i][0], items[i][1], max_tokens=5, temperature=0.0)
        assert (got[i].text, got[i].token_ids, got[i].finish_reason) == (expected.text, expected.token_ids, expected.finish_reason)
        assert got[i].num_input_tokens == len(items[i][1])


def test_generate_streams_steps_and_stops_finished_rows(served):
    server = served()
    requests = [server.prepare(n, "generate", t, {"max_tokens": m, "temperature": 0.0}) for n, t, m in [("writer", "a", 2), ("poet", "bb", 6)]]
    steps = list(server.generate_steps(requests))
    assert steps[0][0] is not None and all(step[0] is None for step in steps[2:])
    assert steps[1][0].finish_reason in ("length", "stop")
    assert server.generate([("writer", "a")], max_tokens=2, temperature=0.0)[0].token_ids == [s[0].token_ids[0] for s in steps[:2]]


def test_prepare_refuses_an_operation_the_prompt_does_not_answer(served):
    server = served()
    with pytest.raises(UserError, match=r"prompt 'a' \(toy, classification\) answers classify, not generate"):
        server.generate([("a", "hi")])
    with pytest.raises(UserError, match="operation 'embed' is not one of classify, generate"):
        server.prepare("a", "embed", "hi")


def test_the_queue_is_bounded_and_close_drains_what_it_admitted(served):
    server = served(max_queue=2)
    server.backend.gate.clear()  # the backend holds every batch until released
    results = []
    worker = threading.Thread(target=lambda: results.append(server.predict([("a", "hi"), ("b", "yo")])))
    worker.start()
    wait_for(lambda: server.held >= 2, "both requests admitted", alive=worker.is_alive)
    with pytest.raises(QueueFullError, match=r"holds 2 requests, its limit \(max_queue\) is 2"):
        server.predict([("a", "more")])
    closed = []
    closer = threading.Thread(target=lambda: closed.append(server.close(timeout=30)))
    closer.start()
    time.sleep(0.05)
    assert closed == []  # waiting for the admitted requests
    server.backend.gate.set()
    worker.join(timeout=60)
    closer.join(timeout=60)
    assert closed == [True] and len(results[0]) == 2
    with pytest.raises(QueueFullError, match="shutting down"):
        server.predict([("a", "late")])
    assert server.held == 0
