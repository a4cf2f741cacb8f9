"""One loader for what users install under an entry point group: generators and sources alike."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from services.common.channels import GENERATOR_NAME_RE
from services.common.logs import fields

T = TypeVar("T")
log = logging.getLogger("zmqstream.entrypoints")


def load_installed(group: str, kind: str, builtins: dict[str, T], make: Callable[[Any], T]) -> dict[str, T]:
    """`builtins` plus each entry of `group`, as `make(the loaded object)` makes it.

    An entry whose name is not a path's `[a-z][a-z0-9_]*`, that takes a name already
    found, that does not load or that `make` refuses (by raising), is logged as a `kind`
    and left out: one broken package must not take the worker down with it.
    """
    found = dict(builtins)
    for entry in entry_points(group=group):
        if entry.name in found or not GENERATOR_NAME_RE.fullmatch(entry.name):
            log.error(f"{kind} name refused", extra=fields(**{kind: entry.name}))
            continue
        try:
            found[entry.name] = make(entry.load())
        except Exception as exc:
            log.error(f"{kind} failed to load", extra=fields(**{kind: entry.name, "error": repr(exc)}))
    return found
