"""Every registered method under FSDP2 (2 processes, gloo): the same outputs and prompt gradients as the unsharded
plain path in float64, the fast path seen to run where the method has one, and each process holding half of the
frozen weights; the same for VPT-deep's fast path on every tiny backbone of the family matrix (timm, open_clip,
Hugging Face); the vision-language methods also under DDP. One torchrun launch of sharded_contract.py runs them
all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cases_text  # noqa: F401  (registers the text methods' cases)
import cases_vision  # noqa: F401  (registers the vision and CLIP methods' cases)
import cases_vlm  # noqa: F401  (registers the vision-language methods' cases)
from harness import CASES, method_of, variants
from promptcore import METHODS
from promptcore.plugins import load_plugins

load_plugins()
NAMES = [n for n in METHODS.names() if n in CASES and CASES.get(n).sharded] + variants(sharded=True)
from test_backbones import TINY  # noqa: E402

from sharded_contract import ddp_cases  # noqa: E402

FAMILIES = [f"vpt_deep:{key}" for key in sorted(TINY)]
DDP = [f"ddp:{name}" for name in ddp_cases(NAMES)]
pytestmark = pytest.mark.slow  # one torchrun launch of two processes


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("sharded")
    torchrun = Path(sys.executable).with_name("torchrun")
    script = Path(__file__).with_name("sharded_contract.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("name", NAMES + FAMILIES)
def test_sharded_method_equals_the_unsharded_plain_path_in_float64(sharded, name):
    for rank, results in enumerate(sharded):
        r = results[name]
        assert r["ok"], f"rank {rank}: {r.get('error')}"
        assert r["units"] >= 2, "no transformer blocks were sharded"
        assert r["out_diff"] < 1e-10, f"rank {rank}: outputs differ by {r['out_diff']:.3g} (relative)"
        assert r["grad_diff"] < 1e-9, f"rank {rank}: prompt gradients differ by {r['grad_diff']:.3g} (relative)"
        assert r["grads_missing_mismatch"] == 0
        if name in FAMILIES or METHODS.get(method_of(name)).trains:
            assert r["grads"] > 0, "no prompt gradient under sharding"
        if r["fast"]:
            assert r["fast_calls"] > 0, f"the fast path of {name} never ran under sharding"
        # Each of the 2 processes holds half of the frozen weights (up to the padding of odd-sized dimensions).
        assert 0.45 < r["frozen_fraction"] < 0.55, f"rank {rank} holds {r['frozen_fraction']:.3f} of the frozen weights"


def test_a_module_kept_whole_is_not_sharded_and_the_results_stay_exact(sharded):
    for rank, results in enumerate(sharded):
        r = results["keep_whole"]
        assert r["ok"], f"rank {rank}: {r.get('error')}"
        assert r["out_diff"] < 1e-10 and r["grad_diff"] < 1e-9 and r["fast_calls"] > 0
        plain = results["text:prompt_tuning"]["frozen_fraction"]
        # The embedding is whole on each process: more than half of the frozen weights, less than all.
        assert plain < r["frozen_fraction"] < 1.0, (plain, r["frozen_fraction"])


@pytest.mark.parametrize("name", DDP)
def test_method_under_ddp_equals_the_unsharded_plain_path_in_float64(sharded, name):
    for rank, results in enumerate(sharded):
        r = results[name]
        assert r["ok"], f"rank {rank}: {r.get('error')}"
        assert r["out_diff"] < 1e-10, f"rank {rank}: outputs differ by {r['out_diff']:.3g} (relative)"
        assert r["grad_diff"] < 1e-9, f"rank {rank}: averaged prompt gradients differ by {r['grad_diff']:.3g} (relative)"
        assert r["grads"] > 0 and r["grads_missing_mismatch"] == 0


def test_a_vision_language_model_with_an_nf4_language_model_shards_and_stays_exact(sharded):
    for rank, results in enumerate(sharded):
        r = results["vlm_nf4"]
        assert r["ok"], f"rank {rank}: {r.get('error')}"
        assert r["units"] >= 2 and r["grads"] > 0 and r["grads_missing_mismatch"] == 0
        assert r["out_diff"] < 1e-10 and r["grad_diff"] < 1e-9, (r["out_diff"], r["grad_diff"])
        # The 4-bit weights (data and scales) are sharded with the rest: each process holds half.
        assert 0.45 < r["frozen_fraction"] < 0.55, f"rank {rank} holds {r['frozen_fraction']:.3f} of the frozen weights"
