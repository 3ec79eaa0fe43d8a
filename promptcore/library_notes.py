"""Third-party notes that reach every user of a library this toolkit builds on without telling them anything, held
back at their source, one by one; every other warning and log line of the libraries is left as it is.

- :func:`import_torchao_quietly`: importing torchao (transformers imports it with its model code whenever it is
  installed) logs two torch deprecation notes about torchao's own enums.
- :func:`hold_back_deepspeed_cpu_note`: importing DeepSpeed's accelerator module (transformers does when it saves a
  model) on a machine without a GPU logs that it runs on the CPU.

The command line holds back more (the libraries' warnings, without ``-v``: :func:`promptcore.cli.one_line_warnings`);
these two are held back from Python too, where a user's own code meets them. Imports no torch.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys

# What transformers' torchao quantizer imports (transformers 5.25, quantizers/quantizer_torchao.py), which transformers
# imports with its model code whenever torchao is installed: the torchao modules whose import logs torch's notes.
TORCHAO_MODULES = ("torchao", "torchao.quantization", "torchao.prototype.safetensors.safetensors_support")

# DeepSpeed's line on a machine without a GPU (deepspeed 0.19.8, accelerator/real_accelerator.py), logged by its
# "DeepSpeed" logger at WARNING the first time its accelerator is looked up.
DEEPSPEED_CPU_NOTE = "Setting accelerator to CPU."


def import_torchao_quietly() -> None:
    """Imports torchao, when it is installed, with torch's ``_pytree`` notes held back for the import only.

    Importing torchao logs two torch deprecation notes about torchao's own enums (``<enum 'KernelPreference'> is an
    Enum subclass ... register_constant() ... deprecated``: torch 2.14 with torchao 0.18) as glog-style ``W...``
    lines on every process, and transformers imports torchao with its model code whenever torchao is installed, so
    every text or vision-language model built here would print them although no torchao code is asked for. Other
    warnings of torch, and these notes outside the import, are untouched. A module that cannot be imported is left
    to whoever needs it.
    """
    if all(m in sys.modules for m in TORCHAO_MODULES) or importlib.util.find_spec("torchao") is None:
        return
    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        for module in TORCHAO_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
    finally:
        pytree.setLevel(level)


class _DropDeepSpeedCPUNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DEEPSPEED_CPU_NOTE)


def hold_back_deepspeed_cpu_note() -> None:
    """Drops DeepSpeed's "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect
    it." line (a filter on its ``DeepSpeed`` logger, which DeepSpeed configures but keeps when it creates it).

    DeepSpeed logs it at WARNING on every process of a machine without a GPU, the first time its accelerator module
    is imported: when transformers saves a model, or a DeepSpeed run starts. On such a machine the CPU is what the
    run uses (DeepSpeed's own choice is not changed), so the line tells nothing. Other lines of that logger pass.
    Idempotent.
    """
    logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _DropDeepSpeedCPUNote) for f in logger.filters):
        logger.addFilter(_DropDeepSpeedCPUNote())


__all__ = ["DEEPSPEED_CPU_NOTE", "TORCHAO_MODULES", "hold_back_deepspeed_cpu_note", "import_torchao_quietly"]
