"""The error type of bad user input.

Every error that user input can cause (a config value, a file, a data row, a model name) derives from
:class:`UserError`: the CLIs print it as one ``error:`` line and exit with status 2. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: the message names what was wrong (field, file or row) and how to fix it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (config, run directory, prompt folder, images) does not exist."""


class UnsupportedModelError(UserError, TypeError):
    """A model given by the user cannot take what was asked of it (token prompts on a CNN, an unknown class)."""


__all__ = ["MissingFileError", "UnsupportedModelError", "UserError"]
