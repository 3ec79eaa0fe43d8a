"""A real Ray Serve application on loopback: bounded concurrent mixed-prompt load, every answer checked against the
backend run alone, dynamic batching across requests, streaming with the openai client. One cluster for the module, in
a process of its own."""

import json
import os
import select
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from serving_toy import ToyBackend, build_toy, make_prompt

from promptcore.serving import PromptRegistry, PromptServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
PROMPTS = {"p0": 2, "p1": 3, "p2": 5, "p3": 2, "gen": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


START_S, STOP_S = 240, 60


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """The Ray Serve application in a process of its own (scripts/serve_toy_ray.py): Ray's threads and its cluster
    stay out of this test process, and the cluster's process group is killed if it does not stop in time."""
    pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("serve")
    root = tmp / "prompts"
    backend = ToyBackend()
    for i, (name, classes) in enumerate(PROMPTS.items()):
        make_prompt(root / name, backend, length=1 + i, num_classes=classes, seed=i)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPTS), os.environ.get("PYTHONPATH", "")])}
    log = tmp / "server.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, str(SCRIPTS / "serve_toy_ray.py"), str(root), str(port)], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_S)
        if not (ready and proc.stdout.readline().strip() == "ready"):
            pytest.fail(f"the Ray Serve application did not start within {START_S} s:\n{log.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}", root
    finally:
        proc.stdin.close()  # the script shuts Serve and Ray down
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the cluster is left (Ray's processes share the group)
        except ProcessLookupError:
            pass
        proc.wait()


def test_concurrent_mixed_load_answers_each_request_as_its_prompt_alone(server_url):
    url, root = server_url
    backend = ToyBackend()
    registry = PromptRegistry(backend, root)
    registry.load_directory()
    alone = PromptServer(backend, registry)
    jobs = [(f"p{i % 4}", f"input number {i}" * (1 + i % 3)) for i in range(48)]

    def ask(job):
        name, text = job
        with httpx.Client(timeout=60) as c:
            return c.post(f"{url}/v1/classify", json={"model": name, "input": text, "top_k": 2})

    with ThreadPoolExecutor(8) as pool:  # bounded: 8 clients at a time
        replies = list(pool.map(ask, jobs))
    for (name, text), reply in zip(jobs, replies):
        assert reply.status_code == 200, reply.text
        got = reply.json()["data"][0]["labels"]
        expected = alone.predict([(name, text)], top_k=2)[0]
        assert [x["label"] for x in got] == expected.labels
        assert [x["score"] for x in got] == pytest.approx(expected.scores, abs=1e-6)
    metrics = httpx.get(f"{url}/metrics").text
    rows = [line for line in metrics.splitlines() if line.startswith('prompttune_batch_size_sum{operation="classify"}')]
    batches = [line for line in metrics.splitlines() if line.startswith('prompttune_batch_size_count{operation="classify"}')]
    assert float(rows[0].split()[-1]) == len(jobs)  # every request ran in some batch, exactly once
    assert float(batches[0].split()[-1]) < len(jobs)  # @serve.batch put concurrent requests of several prompts together


def test_streaming_completions_and_errors_through_ray(server_url):
    url, root = server_url
    api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    backend = ToyBackend()
    alone = PromptServer(backend, PromptRegistry(backend, root))
    alone.registry.add("gen")
    expected = alone.generate([("gen", "hello")], max_tokens=6, temperature=0.0)[0]
    with ThreadPoolExecutor(4) as pool:
        streams = list(pool.map(lambda _: list(api.completions.create(model="gen", prompt="hello", max_tokens=6, temperature=0, stream=True)), range(4)))
    for chunks in streams:
        assert "".join(c.choices[0].text for c in chunks) == expected.text
    with pytest.raises(openai.NotFoundError, match="Did you mean 'gen'"):
        api.completions.create(model="gne", prompt="x")
    reply = httpx.post(f"{url}/v1/classify", content=b"{", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and json.loads(reply.text)["error"]["code"] == "invalid_json"
    assert httpx.get(f"{url}/health").json()["prompts"] == len(PROMPTS)
