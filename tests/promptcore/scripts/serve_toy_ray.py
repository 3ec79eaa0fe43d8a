"""The toy backend's prompts in ROOT served by the prompt server's Ray Serve application on a one-machine Ray cluster
at 127.0.0.1:PORT, in a process of its own (tests/promptcore/test_serving_ray.py). Prints ``ready`` once it answers,
and stops the application and the cluster when its standard input closes.

Usage: python serve_toy_ray.py ROOT PORT
"""

import os
import sys

import ray
from ray import serve
from serving_toy import build_toy

from promptcore.serving import load_serve_config
from promptcore.serving.app import build_application

root, port = sys.argv[1], int(sys.argv[2])
ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False,
         runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
try:
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = load_serve_config({"kind": "text", "prompts": root, "max_batch_size": 16, "batch_wait_timeout_s": 0.05, "device_capacity": 2})
    serve.run(build_application(config, build_toy), name="prompttune", route_prefix="/")
    print("ready", flush=True)
    sys.stdin.read()
finally:
    serve.shutdown()
    ray.shutdown()
