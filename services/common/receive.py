"""Decode, refuse with a reason, never die: how every receive loop handles one message.

A peer's message is hostile until checked: what fails the checks (a PipelineError) is
refused with its reason, and a bug of ours on some input is logged with its trace; either
way it costs only that message, and the loop goes on serving everyone else.
"""

from __future__ import annotations

import logging
from types import TracebackType

from services.common.errors import PipelineError
from services.common.logs import fields


class Refusing:
    """`with guard:` around one message's handling; counts what it refused or failed on."""

    __slots__ = ("log", "log_every", "refused", "what")

    def __init__(self, log: logging.Logger, what: str, log_every: int = 1) -> None:
        """Refusals are logged as `<what> refused`, the first and then one per `log_every`."""
        self.log = log
        self.what = what
        self.log_every = log_every
        self.refused = 0

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if not isinstance(error, Exception):  # none, or a stop (KeyboardInterrupt, SystemExit): go on
            return False
        self.refused += 1
        if not isinstance(error, PipelineError):  # a bug of ours on some input
            self.log.error(f"{self.what} failed", exc_info=error)
        elif self.refused % self.log_every == 1 or self.log_every == 1:
            self.log.warning(
                f"{self.what} refused", extra=fields(error=str(error)[:300], refused=self.refused)
            )
        return True
