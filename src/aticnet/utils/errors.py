"""The exceptions the command line turns into one clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user: a file, a name, a value. The message names it and the problem."""


class DataError(UserError):
    """A data file that cannot be used; ``path`` names it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem

    def __reduce__(self):  # pickles whole (the default would call DataError(message) and fail)
        return type(self), (str(self.path), self.problem)
