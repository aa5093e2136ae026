"""What the training loop does when something goes wrong: a stop signal, a failed save, ranks that disagree.

* ``StopSignals``: SIGINT and SIGTERM ask the loop to stop; it saves a checkpoint and
  returns (exit code 0). A second Ctrl-C raises KeyboardInterrupt at once (exit code 130).
* ``try_save``: a save that fails (disk full) is logged and the run goes on; saves are
  atomic, so the previous file is intact.
* ``all_agree``: under torch.distributed every rank must skip the same steps and stop at the same
  step, or the collectives of the others would wait forever. The training loop agrees on its host flags
  in one reduction per step on the CPU (``aticnet.training.step.agree_on_host``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import torch

from .distributed import all_reduce, is_distributed

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """``with StopSignals() as stop:`` ... ``stop.requested`` is None or the name of the signal received.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, Any] = {}

    def handle(self, signum: int, _frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def try_save(save: Callable[[], object], what: str) -> bool:
    """Run ``save()``; an OSError (disk full, quota) is logged and False returned instead of ending the run."""
    try:
        save()
    except OSError as e:
        log.error("could not save %s (%s); the previous one is kept, training goes on", what, e)
        return False
    return True


def all_agree(ok: bool, device: torch.device | None = None) -> bool:
    """True when ``ok`` holds on every process (one tiny all-reduce under torch.distributed).

    ``device`` is accepted for callers that name theirs; the reduction runs where the group's backend wants it."""
    if not is_distributed():
        return ok
    failed = all_reduce(torch.tensor([0.0 if ok else 1.0]), "max")
    return not bool(failed.item())
