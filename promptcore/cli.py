"""The shared command line of the packages (``vpt``, ``textpt``): ``train`` and ``eval``, plus registered verbs.

A package's console script is one line, ``def main(argv=None): return promptcore.cli.main(RECIPE, argv)``, where
the recipe (:class:`promptcore.recipe.Recipe`) builds the model and data from the package's run config. Further
verbs (``vpt predict``, ``vpt base2new``, ``textpt generate``) are :class:`Command` records in :data:`COMMANDS`,
added by whichever package or plugin (:mod:`promptcore.plugins`) provides them. A verb registered by a module that
imports torch is declared (:func:`declare_command`) where the program's light modules can list it; its module is
imported only when the verb is chosen::

    vpt train -c CONFIG [--set a.b=value ...] [-o RUN_DIR] [--overwrite]
    vpt train --resume RUN_DIR [--set ...]         # the config comes from RUN_DIR/config.yaml
    vpt eval -c CONFIG --prompts DIR [--set ...]   # prints the eval split's metrics as JSON
    vpt eval -c CONFIG [--set ...]                 # a method with nothing to train (zero-shot) needs no --prompts
    vlmpt eval --prompts DIR [--set ...]           # a recipe with config_from_prompts: the config the folder records

Configs are resolved in one pure step returning a new object: a recipe may define ``resolve_config(cfg)``
(:func:`promptcore.recipe.resolve_config`: defaults that depend on other sections of the config, values read from
the backbone or the data; called after seeding). The verbs work with, and a training run records, the resolved
config.

Known errors (bad config, missing or foreign files, bad data) print ``error: ...`` and exit with status 2;
``--traceback`` shows the full traceback instead. Warnings print as one ``warning: ...`` line; those the libraries
raise (torch, transformers, ...) and their progress bars with ``train.progress_bar: false`` are left out unless
``-v/--verbose`` is given.

``PROG --help`` and the help of the verbs registered by light modules import no torch: this module and the packages'
CLI modules import the libraries inside the functions that run a verb, a recipe's ``config_class`` is read only then
(:class:`promptcore.plugins.Deferred`), and the plugins load in full only once a verb runs (after
:func:`check_config_input`, so a missing config file, and every problem of the run config of a verb that reads one,
is reported at once: the run configs, their method configs included, are defined in modules free of torch, see
:func:`promptcore.methods.declare_method`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import sysconfig
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .config import apply_overrides, from_dict, load_config, read_yaml
from .errors import MissingFileError, UserError
from .plugins import load_plugins
from .registry import Registry
from .train_config import check_training_processes

if TYPE_CHECKING:
    from .model import PromptedModel
    from .recipe import DataBundle, Recipe

EXIT_ERROR = 2
SKIPPED_ROWS_FILE = "skipped_rows.txt"  # the rows a run's data.on_bad_rows: skip left out, one per line
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """A CLI verb of one program.

    Attributes:
        prog: the program it belongs to (``vpt``, ``textpt``).
        name: the verb.
        help: one line for ``PROG --help``.
        configure: adds the verb's arguments to its ``argparse`` parser.
        run: runs the verb on the parsed arguments; returns the exit status.
    """

    prog: str
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: Registry[Command] = Registry("command")


def register_command(command: Command) -> Command:
    """Adds ``command`` as ``PROG VERB`` (a verb can be registered once per program)."""
    return COMMANDS.add(f"{command.prog} {command.name}", command)


@dataclass(frozen=True)
class CommandDeclaration:
    """A verb that ``module`` registers (with :func:`register_command`) when imported.

    Attributes:
        prog: the program it belongs to.
        name: the verb.
        help: its line in ``PROG --help``, the same as the registered command's (a test compares them).
        module: the module whose import registers it.
    """

    prog: str
    name: str
    help: str
    module: str


DECLARED_COMMANDS: Registry[CommandDeclaration] = Registry("declared command")


def declare_command(prog: str, name: str, help: str, module: str) -> CommandDeclaration:
    """Lists ``PROG VERB`` in ``PROG --help`` without importing ``module``, which registers the verb; the module is
    imported when the verb is chosen (to parse its arguments, ``PROG VERB --help`` included, and run it). For verbs
    whose module imports torch."""
    return DECLARED_COMMANDS.add(f"{prog} {name}", CommandDeclaration(prog, name, help, module))


def chosen_verb(argv: Sequence[str]) -> str | None:
    """The verb ``argv`` names: its first word that is not an option (the programs' own options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def register_chosen_verb(prog: str, argv: Sequence[str]) -> None:
    """Imports the module of the verb ``argv`` chooses when that verb is only declared, so it is registered."""
    key = f"{prog} {chosen_verb(argv)}"
    if key in DECLARED_COMMANDS and key not in COMMANDS:
        declaration = DECLARED_COMMANDS.get(key)
        importlib.import_module(declaration.module)
        if key not in COMMANDS:
            raise RuntimeError(f"{declaration.module} was declared to register '{key}' and did not")


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``-c/--config CONFIG`` and repeatable ``--set a.b=value``, as every verb reading a run config takes them: the
    program's run config (its recipe's ``config_class``), which :func:`check_config_input` validates before the verb
    runs."""
    parser.add_argument("-c", "--config", required=required, metavar="CONFIG", help="run config (YAML)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a config value, e.g. --set train.lr=0.01 (repeatable; values are read as YAML)",
    )
    parser.set_defaults(run_config=True)


def load_run_config(recipe: Recipe, args: argparse.Namespace) -> Any:
    """The run config a verb asked for: ``-c CONFIG``, or ``RUN_DIR/config.yaml`` with ``--resume RUN_DIR``;
    ``--set`` overrides applied, everything validated (one :class:`ConfigError` listing every problem); not yet
    resolved (:func:`build_model_and_data` resolves it).

    With ``--resume``, ``--set`` may change what does not fix the data order or the optimizer state (e.g.
    ``train.epochs``: the schedule is recomputed for the new length); the trainer names the changes in one line and
    records the new config in ``config.yaml``, the first in ``config.original.yaml``."""
    source = run_config_source(recipe, args)
    if source is None:
        raise UserError("no config given: pass -c CONFIG (or --resume RUN_DIR to continue a run)")
    cfg = load_config(recipe.config_class, source, args.overrides)
    if not hasattr(cfg, "train"):
        raise UserError(f"{recipe.config_class.__name__} has no 'train' section; a run config needs train: TrainConfig")
    return cfg


def run_config_source(recipe: Recipe, args: argparse.Namespace) -> str | Path | None:
    """The file of the run config a verb was given: ``-c CONFIG``, or ``RUN_DIR/config.yaml`` with ``--resume
    RUN_DIR`` (checked to be a run of ``recipe``'s program); None when neither is given. Imports no torch.

    Raises:
        UserError: ``--resume`` with ``-c``, a run directory without its config, or one another program wrote.
    """
    resume = getattr(args, "resume", None)
    if not resume:
        return getattr(args, "config", None)
    from .runs import CONFIG_FILE

    if args.config:
        raise UserError(f"--resume reads the config saved in {resume}/{CONFIG_FILE}; drop -c {args.config} (change values with --set)")
    source = Path(resume) / CONFIG_FILE
    if not source.is_file():
        raise MissingFileError(f"cannot resume: {source} does not exist; --resume takes a run directory written by '{recipe.prog} train'")
    check_run_program(recipe, Path(resume))
    return source


def check_run_program(recipe: Recipe, run_dir: Path) -> None:
    """Refuses a run directory another program wrote (``textpt train --resume`` of a ``vpt`` run): its prompt files
    record the program (``program``, added by ``train``), and its config would not parse as this one's."""
    from .files import read_prompt_config

    last = run_dir / "last"
    if not (last / "prompt_config.json").is_file():
        return
    program = read_prompt_config(last).get("program")
    if program and program != recipe.prog:
        raise UserError(
            f"cannot resume {run_dir}: it is a run of '{program} train', not of '{recipe.prog}'; continue it with "
            f"'{program} train --resume {run_dir}'"
        )


def trains(model: PromptedModel) -> bool:
    """Whether ``model`` has parameters to train (zero-shot baselines have none)."""
    return next(model.prompt_parameters(), None) is not None


def load_prompts_option(model: PromptedModel, prompts: str | None) -> None:
    """Loads the ``--prompts DIR`` of a verb into ``model``; a model with nothing to train may go without."""
    if prompts is not None:
        model.load_prompts(prompts)
    elif trains(model):
        raise UserError(
            f"--prompts: required, the prompt folder to evaluate (a run's best/ or last/); only methods with nothing "
            f"to train evaluate without one, and {type(model).__name__} has trained parameters"
        )


def build_model_and_data(
    recipe: Recipe, cfg: Any, problems: list[str] | None = None
) -> tuple[Any, PromptedModel, DataBundle | None]:
    """Seeds (so prompt initialisation is reproducible), then builds the model and its data from ``cfg``.

    Returns the run config as the recipe resolved it (:func:`promptcore.recipe.resolve_config`), the model and the
    data. With ``problems`` given, a :class:`UserError` of the data (bad rows, a missing column) is appended to it
    and the data is None, so the caller can report it with the other problems of the run.
    """
    from .recipe import resolve_config
    from .trainer import seed_everything

    seed_everything(cfg.train.seed)
    quiet_library_progress(cfg.train.progress_bar)
    cfg = resolve_config(recipe, cfg)
    model = recipe.build_model(cfg)
    if problems is None:
        return cfg, model, recipe.build_data(cfg, model)
    try:
        return cfg, model, recipe.build_data(cfg, model)
    except UserError as e:
        problems.append(str(e))
        return cfg, model, None


def default_run_dir(recipe: Recipe, config_path: str | None, verb: str | None = None) -> Path:
    """``runs/<prog>[-<verb>]-<config name>-<time>``: where a verb writes when given no ``-o``; a second run started
    within the same second gets ``-2`` (``-3`` ...) after the time instead of meeting the first one's folder."""
    stem = Path(config_path).stem if config_path else "run"
    base = Path("runs") / f"{recipe.prog}-{verb + '-' if verb else ''}{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def cmd_train(recipe: Recipe, args: argparse.Namespace) -> int:
    from .preflight import run_problems
    from .trainer import Trainer

    if args.resume and args.output:
        raise UserError("--resume continues the run in place; drop -o/--output")
    problems: list[str] = []
    cfg, model, data = build_model_and_data(recipe, load_run_config(recipe, args), problems)
    model.record_in_prompt_files(program=recipe.prog)  # names the program to continue the run with (--resume)
    run_dir = Path(args.resume) if args.resume else Path(args.output) if args.output else default_run_dir(recipe, args.config)
    problems += run_problems(model, cfg.train, data is None or data.eval is not None, run_dir, data.train if data is not None else None)
    if problems:  # every problem found before any work, at once
        raise UserError(problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    assert data is not None
    trainer = Trainer(
        model, cfg.train, data.train, data.eval, data.collate_fn,
        run_dir=str(run_dir), run_config=cfg, resume=bool(args.resume), overwrite=args.overwrite, batch_order=data.batch_order,
    )
    skipped = data.info.get("skipped_rows") if data.info else None
    if skipped and trainer.is_main:
        (run_dir / SKIPPED_ROWS_FILE).write_text("".join(f"{row}\n" for row in skipped))
        print(f"data: {len(skipped)} bad row(s) left out (data.on_bad_rows: skip), listed in {run_dir / SKIPPED_ROWS_FILE}", file=sys.stderr)
    result = trainer.fit()
    if trainer.is_main:
        print(json.dumps(result, indent=2))
    return 0


def cmd_eval(recipe: Recipe, args: argparse.Namespace) -> int:
    from .files import read_prompt_config
    from .trainer import Trainer

    config_from_prompts = getattr(recipe, "config_from_prompts", None)
    if args.config is None and config_from_prompts is not None:  # the recipe rebuilds the run config from the folder
        if args.prompts is None:
            raise UserError("give the prompt folder with --prompts DIR (a run's best/ or last/), or a run config with -c CONFIG")
        cfg = config_from_prompts(args.prompts, args.overrides)
    else:
        cfg = load_run_config(recipe, args)
        config_for_prompts = getattr(recipe, "config_for_prompts", None)
        if args.prompts is not None and config_for_prompts is not None:
            cfg = config_for_prompts(cfg, read_prompt_config(args.prompts), args.prompts)
    cfg, model, data = build_model_and_data(recipe, cfg)
    if data.eval is None:
        raise UserError(f"the config's data section gives no eval split; {recipe.prog} eval evaluates the eval split")
    load_prompts_option(model, args.prompts)
    trainer = Trainer(model, cfg.train, None, data.eval, data.collate_fn)
    metrics = trainer.evaluate()
    if trainer.is_main:
        print(json.dumps(metrics, indent=2))
    return 0


def build_parser(recipe: Recipe) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=recipe.prog, description=f"{recipe.prog}: prompt tuning of frozen models")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show the libraries' warnings and progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train prompts (a new run, or --resume one)")
    add_config_args(train, required=False)
    train.add_argument("-o", "--output", metavar="RUN_DIR", help="run directory (default: runs/<prog>-<config>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last training state")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in RUN_DIR")
    train.set_defaults(func=lambda a: cmd_train(recipe, a), trains=True)

    ev = sub.add_parser("eval", help="evaluate saved prompts on the config's eval split")
    add_config_args(ev, required=not hasattr(recipe, "config_from_prompts"))
    ev.add_argument("--prompts", metavar="DIR", help="prompt folder (a run's best/ or last/); methods with nothing to train need none")
    ev.set_defaults(func=lambda a: cmd_eval(recipe, a))

    verbs: dict[str, Command | CommandDeclaration] = {c.name: c for _, c in DECLARED_COMMANDS.items() if c.prog == recipe.prog}
    verbs.update((c.name, c) for _, c in COMMANDS.items() if c.prog == recipe.prog)
    for name, command in sorted(verbs.items()):
        verb = sub.add_parser(name, help=command.help, description=command.help)
        if isinstance(command, Command):  # a verb only declared is not chosen (register_chosen_verb): no arguments
            command.configure(verb)
            verb.set_defaults(func=command.run)
    return parser


def main(recipe: Recipe, argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (default: ``sys.argv[1:]``) with the verbs of the plugins that may add some, loads those
    plugins in full, runs the verb and returns the exit status. Other plugins load when a name in the config needs
    them (:func:`promptcore.plugins.lookup`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    load_plugins(package=recipe.prog, lazy=True)
    register_chosen_verb(recipe.prog, argv)
    args = build_parser(recipe).parse_args(argv)
    try:
        with one_line_warnings(args.verbose):
            return _run(args, recipe)
    finally:
        # A multi-process launch (torchrun, accelerate launch) leaves a process group; tear it down before the
        # interpreter exits, where gloo/NCCL threads killed mid-flight abort the process. None without torch.
        torch = sys.modules.get("torch")
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# The folders of the libraries (and the standard library); the toolkit's own packages are not among them even when
# installed there (see _from_library).
LIBRARY_PATHS = tuple({sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")})
OWN_PACKAGES = ("promptcore", "vpt", "textpt", "vlmpt")


def _from_library(filename: str) -> bool:
    """Whether a warning raised at ``filename`` comes from a library rather than the toolkit or the user's code."""
    path = os.path.abspath(filename)
    if not path.startswith(LIBRARY_PATHS):
        return False
    return not any(f"{os.sep}{package}{os.sep}" in path for package in OWN_PACKAGES)


# Library loggers held back without -v: torch's notes (its _pytree deprecations on importing torchao) and the
# line datasets logs before raising an error the CLI reports itself.
QUIET_LOGGERS = {"torch": logging.ERROR, "datasets": logging.CRITICAL}


def hold_back_library_notes(verbose: bool) -> None:
    """Without ``verbose``, sets the loggers of :data:`QUIET_LOGGERS` to their levels. Importing torch sets its
    logger's level again (``torch._logging``), so a command calls this once more after torch is imported."""
    if not verbose:
        for name, level in QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def one_line_warnings(verbose: bool = False):
    """Within it, each warning prints as one ``warning: MESSAGE`` line on stderr (not Python's file:line dump), and
    without ``verbose`` the warnings of the libraries and the notes of :data:`QUIET_LOGGERS` are left out. Restores
    the warning and logging state on exit (the CLI may run inside a test or a notebook)."""

    def one_line(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001 - formatwarning's signature
        if not verbose and _from_library(filename):
            return ""
        first, *_ = str(message).splitlines() or [""]
        return f"warning: {first}\n"

    # formatwarning, not showwarning: a caller recording warnings (pytest.warns, catch_warnings(record=True)) still
    # gets every one.
    loggers = {logging.getLogger(name): logging.getLogger(name).level for name in QUIET_LOGGERS}
    formatwarning = warnings.formatwarning
    warnings.formatwarning = one_line
    hold_back_library_notes(verbose)
    try:
        yield
    finally:
        warnings.formatwarning = formatwarning
        for logger, level in loggers.items():
            logger.setLevel(level)


def quiet_library_progress(progress_bar: bool) -> None:
    """Makes the progress bars of datasets, transformers and huggingface_hub follow ``train.progress_bar``: false
    turns them off in the libraries already imported and, through their environment switches, in those imported
    later (and in the processes this one starts)."""
    if progress_bar:
        return
    os.environ.update(dict.fromkeys(("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_TQDM"), "1"))
    # the switches of the libraries already imported (the core imports none of them itself)
    switches = {"datasets": "disable_progress_bars", "huggingface_hub.utils": "disable_progress_bars",
                "transformers.utils.logging": "disable_progress_bar"}
    for module, switch in switches.items():
        if module in sys.modules:
            getattr(sys.modules[module], switch)()


def check_config_input(args: argparse.Namespace, recipe: Recipe | None = None) -> None:
    """Reads the run config a verb was given (``-c CONFIG``, or the one saved in ``--resume RUN_DIR``) and applies
    the ``--set`` overrides, before torch is imported, so a missing file, a file that is not YAML or a malformed
    override is reported without waiting for it.

    For a verb that reads ``recipe``'s run config (those taking :func:`add_config_args`: ``run_config`` set in its
    arguments), the config is validated too, every problem listed at once as :func:`load_run_config` does: its classes import no
    torch, and a method's config class is found by its declaration (:func:`promptcore.methods.declare_method`)
    without importing the method. Only the checks that need a library (:func:`promptcore.config.library_check`) import
    it, once the rest is valid. A verb that trains (``trains`` set in its arguments) is first refused an engine for
    several processes (``train.distributed``) when not launched in several, before those checks. The verb then loads
    the config as before."""
    source = run_config_source(recipe, args) if recipe is not None else getattr(args, "config", None)
    if not source:
        return
    data = apply_overrides(read_yaml(source), list(getattr(args, "overrides", [])))
    if recipe is not None and getattr(args, "run_config", False):
        train = data.get("train") if isinstance(data, dict) else None
        problems = []
        if getattr(args, "trains", False) and isinstance(train, dict):
            try:
                check_training_processes(train.get("distributed"), int(os.environ.get("WORLD_SIZE", "1")))
            except UserError as e:
                problems.append(str(e))
        from_dict(recipe.config_class, data, str(source), problems)


def _run(args: argparse.Namespace, recipe: Recipe) -> int:
    """Checks the config input, loads the plugins of ``recipe``'s program in full and runs the verb; known errors
    become one ``error:`` line and status 2."""
    try:
        check_config_input(args, recipe)
    except UserError as e:
        return _report(e, args.traceback)
    load_plugins(package=recipe.prog)
    from .trainer import NonFiniteLossError, TrainingInterrupted

    hold_back_library_notes(args.verbose)  # torch is imported by now (the config was checked without it)

    try:
        return int(args.func(args))
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    # Errors that mean "your input is wrong", reported as one clean line. Only these: any other exception (a
    # ValueError from deep inside a library included) is a bug and keeps its traceback.
    except (UserError, NonFiniteLossError) as e:
        return _report(e, args.traceback)


def _report(error: Exception, traceback: bool) -> int:
    """Prints a known error as one ``error:`` line and returns status 2; re-raises it with ``--traceback``."""
    if traceback:
        raise error
    # KeyError's str() wraps the message in quotes; show the message itself.
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR
