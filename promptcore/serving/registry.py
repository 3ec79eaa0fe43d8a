"""The prompts one served backbone answers with: names to loaded prompts, and the device tier over the CPU tier.

Every prompt is opened by the backend (:meth:`ServingBackend.open_prompt`), which checks it against the served
weights; a prompt that fails is refused with its reason and leaves the others serving. Prompts are added and
removed while the server runs: a request holds the :class:`LoadedPrompt` it was admitted with, so removing or
replacing a name only changes what later requests get.

All loaded prompts live in CPU memory; at most ``device_capacity`` of them also live on the backend's device, least
recently used going back first. A batch pins its prompts (:meth:`PromptRegistry.pinned`) so no other batch moves
them while it runs.

Names are looked up, never opened: a request names a prompt the server loaded itself, and an admin load resolves a
name inside the configured prompt folder only (:func:`resolve_prompt_folder`).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..config import read_yaml
from ..errors import MissingFileError, UserError
from ..registry import did_you_mean
from .backend import LoadedPrompt, ServingBackend

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnknownPromptError(UserError, LookupError):
    """A request named a prompt that is not loaded (HTTP 404); the message lists close matches."""


def check_prompt_name(name: object) -> str:
    """Returns ``name`` if it can name a prompt: letters, digits, ``.``, ``_``, ``-``, not starting with ``.``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name == "..":
        raise UserError(
            f"prompt name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (a name, not a path)"
        )
    return name


def resolve_prompt_folder(directory: str | Path, name: str) -> Path:
    """The prompt folder ``name`` inside ``directory``; never a path outside it.

    Raises:
        UserError: ``name`` is a path (absolute, with ``/`` or ``..``), or a symlink leading out of ``directory``.
        MissingFileError: there is no such folder.
    """
    if isinstance(name, str) and (name.startswith("/") or Path(name).is_absolute()):
        raise UserError(f"prompt name {name!r} is an absolute path; name a folder inside the prompt directory")
    if isinstance(name, str) and (".." in Path(name).parts or "/" in name or "\\" in name):
        raise UserError(f"prompt name {name!r} is a path; name a folder directly inside the prompt directory (no '/' or '..')")
    check_prompt_name(name)
    root = Path(directory).resolve()
    folder = root / name
    if not folder.exists():
        known = sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name)) if root.is_dir() else []
        raise MissingFileError(f"no prompt folder {name!r} in {root}.{did_you_mean(name, known)}")
    if folder.resolve().parent != root:
        raise UserError(f"prompt folder {name!r} is a link leading out of the prompt directory {root}; copy the folder in instead")
    return folder


class PromptRegistry:
    """Names to prompts loaded by one backend, with an LRU device tier.

    Args:
        backend: the served backbone; its ``open_prompt`` validates every file.
        directory: the folder of prompt folders that admin loads resolve names in (optional).
        device_capacity: prompts kept on ``backend.device`` at once.
        on_change: called with no argument after every add or remove (metrics).
    """

    def __init__(
        self,
        backend: ServingBackend,
        directory: str | Path | None = None,
        device_capacity: int = 1024,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if device_capacity < 1:
            raise UserError(f"device_capacity: must be >= 1, got {device_capacity}")
        self.backend = backend
        self.directory = Path(directory) if directory is not None else None
        self.device_capacity = device_capacity
        self.on_change = on_change
        self.errors: dict[str, str] = {}  # name -> why it failed to load (the last attempt)
        self.load_seconds: list[float] = []  # how long each successful load took (bench and metrics)
        self._prompts: dict[str, LoadedPrompt] = {}
        self._lock = threading.RLock()  # guards the name map
        self._tier_lock = threading.Lock()  # guards the device tier
        self._resident: OrderedDict[int, LoadedPrompt] = OrderedDict()  # id -> prompt on the device, oldest first
        self._pins: dict[int, int] = {}

    # ----- names ------------------------------------------------------------------------------------------------
    def add(self, name: str, folder: str | Path | None = None, replace: bool = False) -> LoadedPrompt:
        """Opens a prompt folder and serves it as ``name``. Without ``folder`` the name is resolved inside
        :attr:`directory`. Replacing a served name needs ``replace=True``; in-flight requests keep the old prompt.

        Raises:
            UserError: a bad name, a name taken, no folder, or a file the backend refuses (the others are untouched).
        """
        if folder is None:
            if self.directory is None:
                raise UserError(f"cannot load {name!r} by name: the server has no prompt directory (serve config 'prompts')")
            folder = resolve_prompt_folder(self.directory, name)
        check_prompt_name(name)
        with self._lock:
            if name in self._prompts and not replace:
                raise UserError(f"prompt {name!r} is already served; remove it first or pass replace=True")
        start = time.perf_counter()
        try:
            prompt = self.backend.open_prompt(Path(folder), name)
        except UserError as e:
            self.errors[name] = str(e)
            raise
        elapsed = time.perf_counter() - start
        with self._lock:
            if name in self._prompts and not replace:
                raise UserError(f"prompt {name!r} is already served; remove it first or pass replace=True")
            self._prompts[name] = prompt
            self.errors.pop(name, None)
            self.load_seconds.append(elapsed)
        if self.on_change:
            self.on_change()
        return prompt

    def remove(self, name: str) -> LoadedPrompt:
        """Stops serving ``name`` for new requests (requests already admitted finish with it)."""
        with self._lock:
            prompt = self.get(name)
            del self._prompts[name]
        with self._tier_lock:
            if self._pins.get(id(prompt), 0) == 0 and self._resident.pop(id(prompt), None) is not None:
                prompt.to(torch.device("cpu"))
        if self.on_change:
            self.on_change()
        return prompt

    def get(self, name: str) -> LoadedPrompt:
        """The prompt served as ``name``.

        Raises:
            UnknownPromptError: no such prompt; the message lists close matches and how many are served.
        """
        with self._lock:
            prompt = self._prompts.get(name) if isinstance(name, str) else None
            if prompt is not None:
                return prompt
            known = sorted(self._prompts)
        hint = did_you_mean(str(name), known)
        failed = f" It failed to load: {self.errors[name]}" if isinstance(name, str) and name in self.errors else ""
        raise UnknownPromptError(
            f"prompt {name!r} is not served.{hint}{failed} {len(known)} prompt(s) served; GET /v1/models lists them."
        )

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._prompts)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._prompts

    def __len__(self) -> int:
        with self._lock:
            return len(self._prompts)

    # ----- loading many ----------------------------------------------------------------------------------------
    def load_directory(self, directory: str | Path | None = None) -> dict[str, str]:
        """Serves every prompt folder in ``directory`` (default :attr:`directory`) under its folder name.

        Returns the folders that failed, name -> reason; the others are served. Hidden folders (unfinished saves)
        are skipped.
        """
        root = Path(directory) if directory is not None else self.directory
        if root is None:
            raise UserError("no prompt directory to load: set the serve config's 'prompts'")
        if not root.is_dir():
            raise MissingFileError(f"prompt directory {str(root)!r} does not exist; 'prompts' names a folder of prompt folders")
        failed: dict[str, str] = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            self._try_add(folder.name, lambda name=folder.name: self.add(name, resolve_prompt_folder(root, name)), failed)
        return failed

    def load_list(self, path: str | Path) -> dict[str, str]:
        """Serves the prompts a YAML file lists as ``name: folder`` (folders relative to the file).

        Returns the entries that failed, name -> reason; the others are served.
        """
        path = Path(path)
        entries = read_yaml(path)
        if not isinstance(entries, dict):
            raise UserError(f"{path}: expected a mapping of prompt names to prompt folders, found {type(entries).__name__}")
        failed: dict[str, str] = {}
        for name, folder in entries.items():
            if not isinstance(folder, str):
                failed[str(name)] = f"{path}: the folder of {name!r} must be a string, found {folder!r}"
                continue
            self._try_add(str(name), lambda name=str(name), folder=folder: self.add(name, path.parent / folder), failed)
        return failed

    def _try_add(self, name: str, add: Callable[[], LoadedPrompt], failed: dict[str, str]) -> None:
        try:
            add()
        except UserError as e:
            failed[name] = str(e)
            self.errors[name] = str(e)

    # ----- device tier -----------------------------------------------------------------------------------------
    @contextmanager
    def pinned(self, prompts: list[LoadedPrompt]) -> Iterator[None]:
        """Puts ``prompts`` on the backend's device for the duration of a batch; none of them moves until it ends.

        Prompts beyond the capacity go back to the CPU least recently used first, pinned ones excepted (a batch
        naming more distinct prompts than the capacity holds them all while it runs).
        """
        unique = list({id(p): p for p in prompts}.values())
        device = self.backend.device
        with self._tier_lock:
            for prompt in unique:
                key = id(prompt)
                if key in self._resident:
                    self._resident.move_to_end(key)
                else:
                    prompt.to(device)
                    self._resident[key] = prompt
                self._pins[key] = self._pins.get(key, 0) + 1
            self._evict()
        try:
            yield
        finally:
            with self._tier_lock:
                for prompt in unique:
                    key = id(prompt)
                    self._pins[key] -= 1
                    if not self._pins[key]:
                        del self._pins[key]
                self._evict()

    def _evict(self) -> None:
        served = {id(p) for p in list(self._prompts.values())}
        for key in list(self._resident):  # oldest first; removed prompts leave whatever the capacity
            if self._pins.get(key, 0) == 0 and (len(self._resident) > self.device_capacity or key not in served):
                self._resident.pop(key).to(torch.device("cpu"))

    def resident(self) -> list[str]:
        """Names of the prompts on the device, least recently used first."""
        with self._tier_lock:
            return [p.info.name for p in self._resident.values()]


__all__ = ["NAME_PATTERN", "PromptRegistry", "UnknownPromptError", "check_prompt_name", "resolve_prompt_folder"]
