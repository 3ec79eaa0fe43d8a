"""The ``serve`` and ``serve-admin`` verbs: refusals before anything starts, and hot load / unload from the CLI."""

import json
import socket
import threading
from dataclasses import dataclass

import pytest
import uvicorn
from serving_toy import ToyBackend, build_toy, make_prompt
from waiting import wait_for

import promptcore.serving.cli  # noqa: F401 - registers the verbs
from promptcore.cli import main
from promptcore.serving import load_serve_config
from promptcore.serving.app import PromptService, create_app


@dataclass
class ProgOnly:
    """The part of a package's recipe the serve verbs use: its program name."""

    prog: str
    config_class: type = dict


def run(prog, argv, capsys):
    status = main(ProgOnly(prog), argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_serve_refuses_to_bind_beyond_loopback_without_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PROMPTTUNE_API_KEY", raising=False)
    status, _, err = run("vpt", ["serve", "--prompts", str(tmp_path), "--host", "0.0.0.0"], capsys)
    assert status == 2
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        "error: host '0.0.0.0' is reachable from other machines: set an API key in $PROMPTTUNE_API_KEY (clients send "
        "'Authorization: Bearer <key>'), or serve on 127.0.0.1"
    ]


def test_serve_refuses_a_config_of_the_other_kind_and_no_prompts(tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    config.write_text("kind: text\nprompts: nowhere\n")
    status, _, err = run("vpt", ["serve", "-c", str(config)], capsys)
    assert status == 2 and "kind is 'text', but this program serves 'vision' prompts" in err
    (tmp_path / "empty").mkdir()
    status, _, err = run("textpt", ["serve", "-c", str(config), "--prompts", str(tmp_path / "empty")], capsys)
    assert status == 2 and "no prompts to serve" in err
    status, _, err = run("textpt", ["serve", "--prompts", str(tmp_path / "empty"), "--set", "max_batch_size=0"], capsys)
    assert status == 2 and "max_batch_size: must be >= 1" in err


@pytest.fixture
def running(tmp_path):
    backend = ToyBackend()
    root = tmp_path / "prompts"
    for i, name in enumerate(["topic", "spare"]):
        make_prompt(root / name, backend, length=2, num_classes=3, seed=i)
    (root / "spare").rename(tmp_path / "spare")
    service = PromptService.from_config(load_serve_config({"kind": "text", "prompts": str(root)}), build_toy)
    listening = socket.socket()  # bound here and handed over: no other process can take the port in between
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the HTTP server to start", alive=thread.is_alive)
    yield f"http://127.0.0.1:{port}", root, tmp_path / "spare"
    server.should_exit = True
    thread.join(timeout=30)
    listening.close()
    assert not thread.is_alive(), "the HTTP server did not stop within 30 s"


def test_serve_admin_loads_and_unloads_prompts_of_a_running_server(running, capsys):
    url, root, spare = running
    spare.rename(root / "spare")
    status, out, _ = run("textpt", ["serve-admin", "load", "spare", "--url", url], capsys)
    assert status == 0 and json.loads(out)["id"] == "spare"
    status, out, _ = run("textpt", ["serve-admin", "list", "--url", url], capsys)
    assert json.loads(out)["served"] == ["spare", "topic"]
    status, out, _ = run("textpt", ["serve-admin", "unload", "spare", "--url", url], capsys)
    assert status == 0 and json.loads(out)["deleted"] is True
    status, _, err = run("textpt", ["serve-admin", "unload", "spare", "--url", url], capsys)
    assert status == 2 and err.startswith(f"error: DELETE {url}/admin/prompts/spare: 404 prompt 'spare' is not served")
    status, _, err = run("textpt", ["serve-admin", "load", "../x", "--url", url], capsys)
    assert status == 2 and "is a path" in err
    status, _, err = run("textpt", ["serve-admin", "load", "--url", url], capsys)
    assert status == 2 and "give the prompt's NAME" in err


def test_serve_admin_says_when_no_server_answers(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, _, err = run("vpt", ["serve-admin", "list", "--url", f"http://127.0.0.1:{port}"], capsys)
    assert status == 2 and "no server answers" in err


def test_serve_flags_override_the_serve_config(tmp_path):
    import argparse

    from promptcore.serving.cli import configure_serve, serve_config_from_args

    config = tmp_path / "serve.yaml"
    config.write_text("prompts: a\nport: 9000\nmax_batch_size: 8\n")
    parser = argparse.ArgumentParser()
    configure_serve(parser)
    cfg = serve_config_from_args("text", parser.parse_args(["-c", str(config), "--prompts", "b", "--engine", "vllm", "--set", "max_batch_size=4"]))
    assert (cfg.kind, cfg.prompts, cfg.port, cfg.max_batch_size, cfg.backend_options) == ("text", "b", 9000, 4, {"engine": "vllm"})
