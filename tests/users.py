"""Real second users, for what other local users can and cannot do to a pipeline (root only).

Other users cannot run this checkout's interpreter when it lives under /root, so their
processes run the system's Python of the same version with the venv's packages on the path.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pytest
from support import ROOT

SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def run(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """`argv` as this user, from a folder anyone may enter."""
        return subprocess.run(
            list(argv),
            user=self.uid,
            group=self.gid,
            extra_groups=list(self.groups),
            env={"PATH": "/usr/bin:/bin", **(env or {})},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def python(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """`python args…` as this user, with zmqstream and its packages importable."""
        path = f"{ROOT}:{sysconfig.get_paths()['purelib']}"
        return self.run([SYSTEM_PYTHON, *args], {"PYTHONPATH": path, **(env or {})}, timeout_s)


@contextlib.contextmanager
def created_user(name: str, group: str = "") -> Iterator[User]:
    """A system user (in `group`, created too, if given), removed afterwards; skip unless root."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a second user")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"other users need {SYSTEM_PYTHON}")
    made_group = bool(group) and not _exists(grp.getgrnam, group)
    try:
        if made_group:
            subprocess.run(["groupadd", "--system", group], check=True)
        if not _exists(pwd.getpwnam, name):
            extra = ["--groups", group] if group else []
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", *extra, name],
                check=True,
            )
        entry = pwd.getpwnam(name)
        groups = (grp.getgrnam(group).gr_gid,) if group else ()
        yield User(name, entry.pw_uid, entry.pw_gid, groups)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        if made_group:
            subprocess.run(["groupdel", group], check=False)


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True
