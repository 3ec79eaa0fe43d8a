"""A quiet, quick start: ``vpt --help``, ``textpt --help`` and ``vlmpt --help`` (and their verbs'), a missing config
file and the errors of a run config (``train -c CONFIG``) without importing torch, config errors without importing
transformers, torchao or the other packages' plugins; warnings as one ``warning:`` line, the libraries' own (and
torch's logged notes) only with ``-v``; the libraries' progress bars off with ``train.progress_bar: false``."""

from __future__ import annotations

import ast
import importlib
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from promptcore.cli import COMMANDS, DECLARED_COMMANDS, LIBRARY_PATHS, one_line_warnings, quiet_library_progress
from promptcore.methods import METHODS
from promptcore.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("transformers", "torchao", "textpt", "vlmpt", "open_clip", "timm")

# Runs the main of program argv[1] (vpt, textpt) on the rest of argv, then prints the exit status and which heavy
# modules were imported, as JSON.
PROBE = """
import importlib, json, sys
cli = importlib.import_module(sys.argv[1] + ".cli")
try:
    status = cli.main(sys.argv[2:])
except SystemExit as e:
    status = e.code
print(json.dumps({"status": status, "imported": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)
TEXT_HEAVY = tuple(m for m in HEAVY if m != "textpt") + ("vpt",)


def probe(*argv: str, prog: str = "vpt") -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, prog, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(proc.stdout.splitlines()[-1]), proc.stdout + proc.stderr


@pytest.mark.slow
def test_help_lists_plugin_verbs_without_importing_the_other_packages():
    result, out = probe("--help")
    assert result == {"status": 0, "imported": []}, out
    assert "base2new" in out and "predict" in out  # a plugin's verb (vpt.clip) and the package's own


# What --help must not import: torch and the libraries, and the toolkit's other packages (the program's own package
# and its light modules are imported, its plugins only lightly).
HELP_HEAVY = ("torch", "transformers", "torchao", "timm", "open_clip", "datasets", "PIL", "peft", "ray")
PROGRAMS = ("vpt", "textpt", "vlmpt")


def imported_by(command: list[str]) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level modules ``command`` imported (Python's -X importtime report, which a console script also gives
    through PYTHONPROFILEIMPORTTIME) and its completed process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    lines = [line.split("|")[-1] for line in proc.stderr.splitlines() if line.startswith("import time:")]
    return {line.strip().split(".")[0] for line in lines[1:]}, proc  # the first is the report's header


def console_script(prog: str) -> str:
    return str(Path(sys.executable).parent / prog)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "python -m"])
@pytest.mark.parametrize("prog", PROGRAMS)
def test_help_imports_no_torch(prog, how):
    start = [console_script(prog)] if how == "script" else [sys.executable, "-m", prog]
    modules, proc = imported_by([*start, "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {prog} "), proc.stderr[-2000:]
    others = {p for p in PROGRAMS if p != prog}
    assert not modules & (set(HELP_HEAVY) | others), sorted(modules & (set(HELP_HEAVY) | others))
    assert prog in modules and "promptcore" in modules  # the report lists what was imported


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["vpt", "train", "--help"], ["vpt", "predict", "--help"], ["vpt", "sweep", "--help"], ["vpt", "eval", "--help"],
    ["textpt", "train", "--help"], ["textpt", "generate", "--help"], ["vlmpt", "generate", "--help"],
])
def test_a_verbs_help_imports_no_torch(argv):
    modules, proc = imported_by([console_script(argv[0]), *argv[1:]])
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {argv[0]} {argv[1]} "), proc.stderr[-2000:]
    assert not modules & set(HELP_HEAVY), sorted(modules & set(HELP_HEAVY))


@pytest.mark.slow
def test_a_declared_verb_loads_its_module_when_chosen():
    # merge-prompts is declared by vpt.cli and registered by vpt.serving (which imports torch): listed without it,
    # parsed and run with it
    modules, proc = imported_by([console_script("vpt"), "merge-prompts", "--help"])
    assert proc.returncode == 0 and "FOLDER" in proc.stdout, proc.stderr[-2000:]
    assert "torch" in modules


@pytest.mark.slow
@pytest.mark.parametrize("problem, message", [
    (["-c", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["-c", "BAD_YAML"], "not valid YAML"),
    (["-c", "configs/smoke/textpt_tiny.yaml", "--set", "train.lr"], "--set 'train.lr': expected KEY=VALUE"),
])
@pytest.mark.parametrize("prog", PROGRAMS)
def test_a_missing_or_unreadable_config_is_reported_without_torch(prog, problem, message, tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [1\n")
    problem = [str(tmp_path / "bad.yaml") if a == "BAD_YAML" else a for a in problem]
    modules, proc = imported_by([console_script(prog), "train", *problem])
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not modules & set(HELP_HEAVY), sorted(modules & set(HELP_HEAVY))


def test_every_declared_verb_is_registered_by_its_module_with_the_same_help():
    for module in ("vpt.cli", "vpt.clip", "textpt.cli", "vlmpt.cli"):  # what the programs import before parsing
        importlib.import_module(module)
    declared = DECLARED_COMMANDS.items()
    assert {k for k, _ in declared} >= {"vpt merge-prompts", "vpt serve", "vpt base2new", "textpt merge-prompts"}
    for key, declaration in declared:
        importlib.import_module(declaration.module)
        assert COMMANDS.get(key).help == declaration.help, key


@pytest.mark.parametrize("package", ["promptcore", "vpt", "vpt.clip", "textpt", "vlmpt"])
def test_the_lazy_namespaces_export_what_they_declare_for_type_checkers(package):
    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__).read_text())
    checked = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING")
    exported = [n for n in checked.body if isinstance(n, ast.ImportFrom) and (n.level or n.module == "promptcore")]  # not torch's nn
    typed = {a.asname or a.name for n in exported for a in n.names}
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}  # textpt.wrap
    assert typed | defined == set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None and name in dir(module)
    with pytest.raises(AttributeError, match="has no attribute 'bogus'"):
        module.bogus


def test_using_a_package_registers_its_methods():
    code = ("import sys, promptcore.methods as m, vpt; before = len(m.METHODS); vpt.VPTConfig; "
            "print(before, 'vision:vpt_deep' in m.METHODS, 'vision:pixel_pad' in m.METHODS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    assert out.split() == ["0", "True", "True"]


@pytest.mark.slow
def test_a_config_error_comes_without_importing_the_libraries(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: {name: timm:vit_tiny_patch16_224}\nbogus: 1\n")
    result, out = probe("train", "-c", str(tmp_path / "bad.yaml"))
    assert result == {"status": 2, "imported": []}, out
    assert "bogus: unknown key" in out and "Traceback" not in out


@pytest.mark.slow
def test_textpt_help_imports_no_model_library():
    result, out = probe("--help", prog="textpt")
    assert result["status"] == 0 and not set(result["imported"]) & set(TEXT_HEAVY), out
    assert "generate" in out and "_pytree" not in out


@pytest.mark.slow
def test_torch_notes_stay_held_back_when_torch_is_imported_after_the_config_check():
    # the config is checked before torch is imported, and importing torch sets its logger's level again; nf4
    # imports torchao (whose import logs torch's two _pytree notes), then is refused on the tiny model's sizes
    result, out = probe("train", "-c", "configs/smoke/textpt_tiny.yaml", "--set", "model.quantization=nf4", prog="textpt")
    assert result["status"] == 2 and "torchao" in result["imported"], out
    assert "nf4 stores weights in blocks" in out and "_pytree" not in out, out


@pytest.mark.slow
@pytest.mark.parametrize("problem", [["--set", "model.bogus=1"], ["--set", "train.lr=abc"]])
def test_a_textpt_config_error_comes_without_importing_transformers(problem):
    # the smoke config's random:llama kwargs are checked against transformers' LlamaConfig: only once the rest is valid
    result, out = probe("train", "-c", "configs/smoke/textpt_tiny.yaml", *problem, prog="textpt")
    assert result["status"] == 2 and not set(result["imported"]) & set(TEXT_HEAVY), out
    assert problem[1].split("=")[0] in out and "Traceback" not in out


# What a config error of a run config must not import: torch and the model and data libraries.
CONFIG_HEAVY = ("torch", "transformers", "datasets", "timm", "open_clip", "PIL")


# Each program's config, with the config class of its prompt section and the unknown method's message.
RUN_CONFIGS = {
    "textpt": ("configs/smoke/textpt_tiny.yaml", "PromptTuningConfig", "unknown text method 'bogus'"),
    "vpt": ("configs/smoke/vpt_tiny.yaml", "VPTConfig", "unknown vision method 'bogus'"),
    "vpt.clip": ("configs/clip/smoke_coop_tiny.yaml", "CoOpConfig", "unknown vision method 'bogus'"),
    "vlmpt": ("configs/smoke/vlmpt_tiny.yaml", "VLMPromptTuningConfig", "unknown method 'bogus'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["unknown key", "bad type", "unknown method", "unknown prompt key"])
@pytest.mark.parametrize("package", RUN_CONFIGS)
def test_a_run_config_error_comes_without_importing_torch(package, problem):
    config, prompt_class, unknown_method = RUN_CONFIGS[package]
    override, message = {
        "unknown key": ("train.bogus=1", "train.bogus: unknown key for TrainConfig"),
        "bad type": ("train.lr=abc", "train.lr: expected a number, found str 'abc'"),
        "unknown method": ("prompt.method=bogus", f"prompt.method: {unknown_method}"),
        "unknown prompt key": ("prompt.bogus=1", f"prompt.bogus: unknown key for {prompt_class}"),
    }[problem]
    prog = package.split(".")[0]
    modules, proc = imported_by([console_script(prog), "train", "-c", config, "--set", override])
    report = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 2 and message in report and "Traceback" not in report, report[-2000:]
    assert report.count("error:") == 1 and report.startswith("error: 1 problem(s)"), report[-2000:]
    assert not modules & set(CONFIG_HEAVY), sorted(modules & set(CONFIG_HEAVY))


@pytest.mark.slow
@pytest.mark.parametrize("package, override, message", [
    ("textpt", "model.task=seq_clss", "model.task: 'seq_clss' is not one of 'causal_lm', 'seq2seq', 'seq_cls'. Did you mean 'seq_cls'"),
    ("textpt", "data.source=csvv", "data.source: unknown text data source 'csvv'. Did you mean 'csv'?"),
    ("vpt", "prompt.head=lineer", "prompt.head: unknown VPT head 'lineer'. Did you mean 'linear'?"),
    ("vpt", "data.source=synthetc", "data.source: unknown data source 'synthetc'. Did you mean 'synthetic'?"),
    ("vlmpt", "model.name=random:lava", "model.name: 'random:lava': no tiny model of type 'lava'"),
])
def test_an_unknown_registered_name_is_reported_without_importing_torch(package, override, message):
    # the names are declared by the packages (Registry.declare) where their light modules run
    modules, proc = imported_by([console_script(package), "train", "-c", RUN_CONFIGS[package][0], "--set", override])
    report = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 2 and message in report and report.count("error:") == 1, report[-2000:]
    assert not modules & set(CONFIG_HEAVY), sorted(modules & set(CONFIG_HEAVY))


def config_report(argv: list[str], message: str) -> None:
    """Runs the console script ``argv`` and checks that it ends, without importing torch or the model and data
    libraries, in one ``error:`` naming ``message``."""
    modules, proc = imported_by([console_script(argv[0]), *argv[1:]])
    report = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 2 and message in report and report.count("error:") == 1, report[-2000:]
    assert "Traceback" not in report, report[-2000:]
    assert not modules & set(CONFIG_HEAVY), sorted(modules & set(CONFIG_HEAVY))


@pytest.mark.slow
@pytest.mark.parametrize("package, overrides, message", [
    ("vpt", ["train.distributed=fsdpp"], "train.distributed: unknown engine 'fsdpp'. Did you mean 'fsdp'"),
    ("vpt", ["train.distributed=fsdp"], "train.distributed: fsdp needs several processes, this run has 1"),
    ("textpt", ["train.distributed=deepspeed"], "train.distributed: deepspeed needs several processes, this run has 1"),
    ("vpt", ["train.callbacks=[step_timr]"], "train.callbacks[0]: unknown callback 'step_timr'. Did you mean 'step_timer'?"),
    # gpa is declared by vpt.clip, whose light part the unknown name loads; a declared name passes without torch
    ("vpt", ["train.callbacks=[gpx]"], "train.callbacks[0]: unknown callback 'gpx'. Did you mean 'gpa'?"),
    ("vpt.clip", ["train.callbacks=[gpa, {name: early_stopping, patience: 0}]"], "train.callbacks[1] (early_stopping): patience: must be"),
    ("textpt", ["prompt.num_classes=3"], "prompt.num_classes: 3 does not match data.num_classes 2 of the synthetic data"),
    ("textpt", ["model.task=seq2seq", "data.packing=true"], "data.packing: true packs the batches of decoder-only models"),
    ("textpt", ["model.task=seq_cls", "prompt.verbalizer=null", "data.num_classes=9"], "num_classes must be between 2 and 8, got 9"),
])
def test_engines_callbacks_and_checks_across_sections_are_reported_without_importing_torch(package, overrides, message, monkeypatch):
    # the engines' and the callbacks' names, the tasks' traits and the synthetic class names are declared torch-free
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process, as outside a launcher
    sets = [a for o in overrides for a in ("--set", o)]
    config_report([package.split(".")[0], "train", "-c", RUN_CONFIGS[package][0], *sets], message)


@pytest.mark.slow
@pytest.mark.parametrize("prog", ["vpt", "textpt"])
def test_the_saved_config_of_a_resumed_run_is_checked_without_importing_torch(prog, tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / RUN_CONFIGS[prog][0]).read_text())
    config_report([prog, "train", "--resume", str(tmp_path), "--set", "train.lr=abc"], "train.lr: expected a number, found str 'abc'")
    config_report([prog, "train", "--resume", str(tmp_path), "-c", RUN_CONFIGS[prog][0]], "--resume reads the config saved in")


@pytest.mark.slow
@pytest.mark.parametrize("verb", [["base2new"], ["interpret", "--prompts", "runs/none"]])
def test_a_config_error_of_a_declared_clip_verb_comes_without_importing_torch(verb):
    # the verb's module (vpt.clip.cli) is imported to parse its arguments: it imports no torch at the top
    modules, proc = imported_by([console_script("vpt"), *verb, "-c", RUN_CONFIGS["vpt.clip"][0], "--set", "train.bogus=1"])
    report = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 2 and "train.bogus: unknown key for TrainConfig" in report, report[-2000:]
    assert not modules & set(CONFIG_HEAVY), sorted(modules & set(CONFIG_HEAVY))


def test_the_declared_methods_are_those_their_modules_register():
    load_plugins(lazy=True)  # the packages declare their methods when imported
    declared = METHODS.declarations()
    assert {k for k, _ in declared} >= {"text:prompt_tuning", "vision:vpt_deep", "vision:coop", "text:vlm_prefix"}
    for key, declaration in declared:
        importlib.import_module(declaration.module)
        assert METHODS.get(key).config_class is declaration.record.config_class(), key
        assert METHODS.get(key).build.__module__ == declaration.module, key
    for package in {d.module.split(".")[0] for _, d in declared}:  # a package that declares declares every method
        module = importlib.import_module(package)
        for name in module.__all__:  # loads it in full, as load_plugins() does
            getattr(module, name)
        registered = {k for k, m in METHODS.items() if m.build.__module__.startswith(package + ".")}
        assert registered <= {k for k, _ in declared}, sorted(registered - {k for k, _ in declared})


def test_a_declared_name_is_known_before_its_module_registers_it():
    from promptcore.registry import Registry

    registry = Registry("toy head")
    registry.declare("json_head", "json")
    assert registry.knows("json_head") and "json_head" not in registry and registry.known_names() == ["json_head"]
    with pytest.raises(KeyError, match=r"unknown toy head 'json_hed'. Did you mean 'json_head'\? Known: json_head."):
        registry.get("json_hed")
    with pytest.raises(KeyError, match=r"'json_head' is already declared \(by json\)"):
        registry.declare("json_head", "csv")
    # get() imports the declared module; one that does not register the name is reported as unknown
    with pytest.raises(KeyError, match=r"unknown toy head 'json_head'"):
        registry.get("json_head")
    registry.declaration("json_head")
    with registry.temporarily("json_head", "a record"):
        assert registry.get("json_head") == "a record"


# The registries whose names the toolkit's packages declare, besides the methods': (module, registry).
DECLARING_REGISTRIES = [
    ("textpt.config", "TASKS"), ("vpt.config", "HEADS"), ("vpt.config", "SOURCES"), ("vlmpt.config", "FAMILIES"),
    ("promptcore.train_config", "ENGINES"),
]


@pytest.mark.parametrize("module, name", DECLARING_REGISTRIES)
def test_the_declared_names_are_those_the_packages_register(module, name):
    load_plugins(lazy=True)  # the packages declare their names when imported
    registry = importlib.import_module(module).__dict__[name]
    declared = registry.declarations()
    assert len(declared) >= 3, declared
    for key, declaration in declared:
        importlib.import_module(declaration.module)
        assert key in registry, (key, declaration.module)
    load_plugins()  # every package in full: nothing registered that is not declared
    assert registry.names() == [k for k, _ in declared]


def test_the_declared_traits_are_those_of_the_registered_classes():
    # what a config check reads of a declaration without importing torch is what the registered entry says
    from promptcore.train_config import ENGINES
    from textpt.config import TASKS

    load_plugins(lazy=True)
    importlib.import_module("promptcore.engines")
    importlib.import_module("textpt.tasks")
    for name, declaration in ENGINES.declarations():
        assert declaration.record.several_processes is ENGINES.get(name).several_processes, name
    assert {n for n, d in ENGINES.declarations() if d.record.several_processes} == {"ddp", "fsdp", "deepspeed"}
    for name, declaration in TASKS.declarations():
        task, traits = TASKS.get(name), declaration.record
        assert isinstance(task, type(traits)) and task.name == traits.name == name, name
        assert (task.decoder_only, task.label_words) == (traits.decoder_only, traits.label_words), name
        assert type(task).check_run is type(traits).check_run, name


def test_a_declared_callback_is_registered_by_its_module_and_built_from_a_config():
    from promptcore.callbacks import CALLBACKS, build_callback
    from promptcore.config import ConfigError, load_config
    from vpt.run_config import VisionRunConfig

    load_plugins(lazy=True)
    declared = CALLBACKS.declarations()
    assert [n for n, _ in declared] == ["gpa"]
    for name, declaration in declared:
        importlib.import_module(declaration.module)
        assert CALLBACKS.get(name).__module__ == declaration.module
    assert type(build_callback({"name": "gpa", "mean": 5, "std": 2})).__name__ == "GaussianPromptAggregation"
    config = ROOT / RUN_CONFIGS["vpt.clip"][0]
    with pytest.raises(ConfigError, match=r"train.callbacks\[0\].bogus: unknown argument of callback 'gpa'. It takes mean, std"):
        load_config(VisionRunConfig, config, ["train.callbacks=[{name: gpa, bogus: 1}]"])


def test_a_library_check_runs_once_the_rest_of_the_config_is_valid():
    from promptcore.config import ConfigError, load_config
    from textpt.run_config import TextRunConfig

    config = ROOT / "configs" / "smoke" / "textpt_tiny.yaml"
    with pytest.raises(ConfigError, match=r"train.lr: expected a number") as e:
        load_config(TextRunConfig, config, ["model.kwargs.hiden_size=3", "train.lr=abc"])
    assert "hiden_size" not in str(e.value)  # left for after the cheap problems are fixed
    with pytest.raises(ConfigError, match=r"model.kwargs: 'hiden_size' is not a field of the llama config"):
        load_config(TextRunConfig, config, ["model.kwargs.hiden_size=3"])


def library_file() -> str:
    return os.path.join(LIBRARY_PATHS[0], "somelib", "module.py")


@pytest.mark.parametrize("verbose", [False, True])
def test_warnings_print_as_one_line_and_library_ones_only_when_verbose(verbose, capsys):
    with one_line_warnings(verbose), warnings.catch_warnings():
        warnings.simplefilter("always")
        # Python's own showing (stderr, through formatwarning), which pytest's recording of warnings replaces
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(warnings.formatwarning(m, c, f, n, line))
        warnings.warn_explicit("train.lr looks large\nsecond line", UserWarning, __file__, 1)
        warnings.warn_explicit("a library's deprecation", FutureWarning, library_file(), 1)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: train.lr looks large"] + (["warning: a library's deprecation"] if verbose else [])


def test_warnings_are_still_recorded_and_the_state_is_restored():
    formatwarning = warnings.formatwarning
    with one_line_warnings(), pytest.warns(FutureWarning, match="deprecation"):
        warnings.warn_explicit("a library's deprecation", FutureWarning, library_file(), 1)
    assert warnings.formatwarning is formatwarning


@pytest.mark.parametrize("verbose", [False, True])
def test_torch_logged_notes_only_when_verbose(verbose):
    pytree = logging.getLogger("torch.utils._pytree")  # where the two Enum register_constant notes come from
    with one_line_warnings(verbose):
        assert pytree.isEnabledFor(logging.WARNING) is verbose
    assert pytree.isEnabledFor(logging.WARNING)


def test_library_progress_bars_follow_progress_bar(monkeypatch):
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging

    for variable in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_TQDM"):
        monkeypatch.setenv(variable, "")  # restored (removed) after the test
        monkeypatch.delenv(variable)
    try:
        transformers.utils.logging.enable_progress_bar()  # as in a fresh process (an earlier run may have turned it off)
        quiet_library_progress(True)
        assert transformers.utils.logging.is_progress_bar_enabled()
        quiet_library_progress(False)
        assert not transformers.utils.logging.is_progress_bar_enabled()
        assert not datasets.is_progress_bar_enabled()
        assert huggingface_hub.utils.are_progress_bars_disabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # for libraries imported later
    finally:
        transformers.utils.logging.enable_progress_bar()
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()
