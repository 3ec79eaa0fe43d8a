"""The prompt registry of one served backbone: validation on load, names not paths, hot add / remove, the LRU tier."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch
from serving_toy import ToyBackend, make_prompt

from promptcore.errors import MissingFileError, UserError
from promptcore.serving import PromptRegistry, PromptServer, UnknownPromptError
from promptcore.serving.registry import resolve_prompt_folder


@pytest.fixture
def backend():
    return ToyBackend()


@pytest.fixture
def prompt_dir(tmp_path, backend):
    root = tmp_path / "prompts"
    for i, name in enumerate(["sentiment", "topic", "spam"]):
        make_prompt(root / name, backend, length=2 + i, num_classes=2 + i, seed=i)
    return root


def test_a_directory_loads_the_good_prompts_and_reports_each_bad_one(prompt_dir, backend):
    make_prompt(prompt_dir / "foreign", ToyBackend(seed=7), length=2, num_classes=2, seed=9)
    make_prompt(prompt_dir / "corrupt", backend, length=2, num_classes=2, seed=9)
    (prompt_dir / "corrupt" / "prompts.safetensors").write_bytes(b"\x00" * 10)
    (prompt_dir / "notes").mkdir()
    (prompt_dir / ".sentiment.abc.tmp").mkdir()  # an unfinished save is not a prompt
    registry = PromptRegistry(backend, prompt_dir)
    failed = registry.load_directory()
    assert registry.names() == ["sentiment", "spam", "topic"]
    assert set(failed) == {"foreign", "corrupt", "notes"}
    assert "other weights" in failed["foreign"]
    assert "truncated or corrupt" in failed["corrupt"]
    assert "prompt_config.json is missing" in failed["notes"]
    assert registry.errors == failed
    with pytest.raises(UnknownPromptError, match="failed to load: .*other weights"):
        registry.get("foreign")


def test_a_yaml_list_names_prompts_relative_to_the_file(tmp_path, prompt_dir, backend):
    listing = tmp_path / "prompts.yaml"
    listing.write_text("reviews: prompts/sentiment\nnews: prompts/topic\nbad: 3\n")
    registry = PromptRegistry(backend)
    failed = registry.load_list(listing)
    assert registry.names() == ["news", "reviews"]
    assert "must be a string" in failed["bad"]
    assert torch.equal(registry.get("reviews").prompt, backend.open_prompt(prompt_dir / "sentiment", "x").prompt)


def test_unknown_names_404_with_close_matches(prompt_dir, backend):
    registry = PromptRegistry(backend, prompt_dir)
    registry.load_directory()
    with pytest.raises(UnknownPromptError, match=r"prompt 'sentimnt' is not served\. Did you mean 'sentiment'\?.* 3 prompt\(s\) served"):
        registry.get("sentimnt")


@pytest.mark.parametrize(
    ("name", "match"),
    [("../prompts/sentiment", "is a path"), ("/etc/passwd", "absolute path"), ("a/b", "is a path"),
     ("..", "is a path"), (".hidden", "not allowed"), ("", "not allowed")],
)
def test_admin_names_never_leave_the_prompt_directory(prompt_dir, backend, name, match):
    registry = PromptRegistry(backend, prompt_dir)
    with pytest.raises(UserError, match=match):
        registry.add(name)
    assert len(registry) == 0


def test_a_symlink_out_of_the_directory_is_refused_one_inside_is_followed(tmp_path, prompt_dir, backend):
    outside = make_prompt(tmp_path / "elsewhere", backend, length=2, num_classes=2, seed=5)
    os.symlink(outside, prompt_dir / "escape")
    os.symlink(prompt_dir / "topic", prompt_dir / "alias")
    registry = PromptRegistry(backend, prompt_dir)
    with pytest.raises(UserError, match="link leading out of the prompt directory"):
        registry.add("escape")
    assert registry.add("alias").info.classes == backend.open_prompt(prompt_dir / "topic", "t").info.classes
    with pytest.raises(MissingFileError, match="no prompt folder 'topc'.*Did you mean 'topic'"):
        resolve_prompt_folder(prompt_dir, "topc")


def test_add_remove_and_replace(prompt_dir, backend):
    registry = PromptRegistry(backend, prompt_dir)
    registry.add("topic")
    with pytest.raises(UserError, match="already served"):
        registry.add("topic")
    old = registry.get("topic")
    new = registry.add("topic", prompt_dir / "spam", replace=True)
    assert registry.get("topic") is new is not old
    registry.remove("topic")
    with pytest.raises(UnknownPromptError):
        registry.get("topic")
    with pytest.raises(UnknownPromptError):
        registry.remove("topic")
    with pytest.raises(UserError, match="no prompt directory"):
        PromptRegistry(backend).add("topic")


def test_a_request_holds_its_prompt_after_the_name_is_removed(prompt_dir, backend):
    registry = PromptRegistry(backend, prompt_dir)
    registry.load_directory()
    server = PromptServer(backend, registry)
    held = server.prepare("topic", "classify", "hello", {"top_k": 2})
    expected = server.classify([held])
    registry.remove("topic")
    assert server.classify([held]) == expected  # admitted before the removal: still answered
    with pytest.raises(UnknownPromptError):
        server.prepare("topic", "classify", "hello", {})


def test_the_device_tier_is_an_lru_and_a_batch_pins_its_prompts(tmp_path, backend):
    root = tmp_path / "p"
    for i in range(5):
        make_prompt(root / f"p{i}", backend, length=2, num_classes=2, seed=i)
    registry = PromptRegistry(backend, root, device_capacity=2)
    registry.load_directory()
    p = {n: registry.get(n) for n in registry.names()}
    for name in ["p0", "p1", "p0", "p2"]:
        with registry.pinned([p[name]]):
            pass
    assert registry.resident() == ["p0", "p2"]  # p1 was the least recently used
    assert p["p1"].moves == 2 and p["p3"].moves == 0  # on the device and back; never placed
    with registry.pinned([p["p1"], p["p3"], p["p4"]]):  # more than the capacity: all held while the batch runs
        assert registry.resident() == ["p1", "p3", "p4"]
        with registry.pinned([p["p0"]]):
            assert registry.resident() == ["p1", "p3", "p4", "p0"]
        assert registry.resident() == ["p1", "p3", "p4"]  # p0, unpinned, made room first
    assert registry.resident() == ["p3", "p4"]
    registry.remove("p4")
    assert registry.resident() == ["p3"] and p["p4"].device == torch.device("cpu")


def test_hot_add_and_remove_under_traffic_loses_no_request(prompt_dir, backend, tmp_path):
    spare = make_prompt(tmp_path / "spare", backend, length=3, num_classes=4, seed=11)
    registry = PromptRegistry(backend, prompt_dir, device_capacity=2)
    registry.load_directory()
    server = PromptServer(backend, registry, max_queue=64)
    alone = ToyBackend()
    reference = {
        name: alone.classify([alone.prepare(alone.open_prompt(folder, name), "classify", "traffic", {"top_k": 2})])[0]
        for name, folder in [("sentiment", prompt_dir / "sentiment"), ("topic", prompt_dir / "topic"), ("spare", spare)]
    }
    stop = threading.Event()
    problems: list[str] = []
    answered = {"spare": 0, "stable": 0, "refused": 0}

    def client() -> None:
        while not stop.is_set():
            for name in ("sentiment", "spare", "topic"):
                try:
                    got = server.predict([(name, "traffic")], top_k=2)[0]
                except UnknownPromptError:
                    answered["refused"] += name == "spare"
                    if name != "spare":
                        problems.append(f"{name} refused")
                    continue
                except Exception as e:  # noqa: BLE001 - every other failure is a lost request
                    problems.append(repr(e))
                    continue
                if got.labels != reference[name].labels or max(abs(a - b) for a, b in zip(got.scores, reference[name].scores)) > 1e-6:
                    problems.append(f"{name}: {got} != {reference[name]}")
                answered["spare" if name == "spare" else "stable"] += 1

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(15):
        registry.add("spare", spare)
        registry.remove("spare")
    registry.add("spare", spare)
    deadline = time.monotonic() + 60
    while answered["spare"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert problems == []
    assert answered["stable"] > 0 and answered["spare"] >= 3
