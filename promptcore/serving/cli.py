"""The ``serve`` and ``serve-admin`` verbs of ``vpt`` (kind ``vision``), ``textpt`` (kind ``text``) and ``vlmpt``
(kind ``vision-language``)::

    vpt serve --prompts prompts/ [-c SERVE_CONFIG] [--set KEY=VALUE ...] [--host 127.0.0.1] [--port 8000]
    vpt serve-admin list | load NAME | unload NAME [--url http://127.0.0.1:8000]

``serve`` starts a local Ray cluster, runs the Ray Serve application (:func:`promptcore.serving.app.build_application`)
and serves until Ctrl-C or SIGTERM, then drains in-flight requests and stops. ``serve-admin`` talks to a running
server's admin endpoints with the token in ``$PROMPTTUNE_ADMIN_KEY``. A package registers the verbs by importing
this module.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from urllib.parse import quote

from ..cli import Command, register_command
from ..errors import UserError
from .config import ServeConfig, load_serve_config

KINDS = {"vpt": "vision", "textpt": "text", "vlmpt": "vision-language"}
ADMIN_KEY_ENV = "PROMPTTUNE_ADMIN_KEY"


def configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="SERVE_CONFIG", help="serve config (YAML; configs/serve/*.yaml)")
    parser.add_argument("--prompts", metavar="DIR", help="a folder of prompt folders, each served under its folder name")
    parser.add_argument("--prompt-list", metavar="FILE", help="a YAML file of 'name: prompt folder' lines")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; anything else needs $PROMPTTUNE_API_KEY)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--engine", help="the backend's engine where it has several (textpt: hf, vllm)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a serve config value, e.g. --set max_batch_size=64 (repeatable)",
    )


def serve_config_from_args(kind: str, args: argparse.Namespace) -> ServeConfig:
    """The serve config of ``args``: the file, then ``--set``, then the flags; its kind must be the program's."""
    overrides = list(args.overrides)
    for flag, key in (("prompts", "prompts"), ("prompt_list", "prompt_list"), ("host", "host"), ("port", "port"), ("device", "device"), ("engine", "backend_options.engine")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    cfg = load_serve_config(args.config, overrides)
    if args.config is None or "kind" not in (_yaml_keys(args.config)):
        cfg.kind = kind
    elif cfg.kind != kind:
        raise UserError(f"{args.config}: kind is {cfg.kind!r}, but this program serves {kind!r} prompts; use the other program or fix 'kind'")
    return cfg


def _yaml_keys(path: str) -> set[str]:
    from ..config import read_yaml

    return set(read_yaml(path))


def run_serve(kind: str, args: argparse.Namespace) -> int:
    cfg = serve_config_from_args(kind, args)
    cfg.check_exposure()
    from .app import build_application, configured_folders

    configured_folders(cfg)  # no prompts at all: say so before starting a cluster
    import ray
    from ray import serve

    ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
    # After ray.init, whose driver installs its own SIGTERM handler (it prints a stack and aborts the process).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        try:
            serve.run(build_application(cfg), name="prompttune", route_prefix="/")
        except RuntimeError as e:
            raise UserError(f"the server did not start: {e}".splitlines()[0] + " (the replica's log is in /tmp/ray/session_latest/logs/serve)") from None
        print(f"serving {kind} prompts on http://{cfg.host}:{cfg.port} (GET /v1/models lists them; Ctrl-C stops)", file=sys.stderr, flush=True)
        stop.wait()
        print("stopping: finishing the requests in flight", file=sys.stderr, flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def configure_admin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "load", "unload"], help="list the prompts, load one, or unload one")
    parser.add_argument("name", nargs="?", help="the prompt (load: a folder of the server's prompt directory)")
    parser.add_argument("--replace", action="store_true", help="load: replace a prompt already served under NAME")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")


def run_admin(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise UserError(f"serve-admin {args.action}: give the prompt's NAME")
    base = args.url.rstrip("/")
    if args.action == "list":
        method, url, body = "GET", f"{base}/admin/prompts", None
    elif args.action == "load":
        method, url, body = "POST", f"{base}/admin/prompts", {"name": args.name, "replace": args.replace}
    else:
        method, url, body = "DELETE", f"{base}/admin/prompts/{quote(args.name, safe='')}", None
    print(json.dumps(admin_request(method, url, body), indent=2))
    return 0


def admin_request(method: str, url: str, body: dict | None = None) -> dict:
    """One call to an admin endpoint with the token in ``$PROMPTTUNE_ADMIN_KEY``; an error answer raises ``UserError``."""
    headers = {"Content-Type": "application/json"}
    if os.environ.get(ADMIN_KEY_ENV):
        headers["Authorization"] = f"Bearer {os.environ[ADMIN_KEY_ENV]}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = e.reason
        raise UserError(f"{method} {url}: {e.code} {message}") from None
    except urllib.error.URLError as e:
        raise UserError(f"{method} {url}: no server answers ({e.reason}); start one with 'serve' or check --url") from None


for _prog, _kind in KINDS.items():
    register_command(Command(
        _prog, "serve", f"serve {_kind} prompts on one frozen backbone over HTTP (Ray Serve; loopback by default)",
        configure_serve, lambda args, kind=_kind: run_serve(kind, args),
    ))
    register_command(Command(
        _prog, "serve-admin", "list, load or unload the prompts of a running server", configure_admin, run_admin,
    ))

__all__ = ["KINDS", "admin_request", "run_admin", "run_serve", "serve_config_from_args"]
