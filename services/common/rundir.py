"""The run folder of ipc sockets: private, checked before use, never followed through a link.

`/tmp/zmqstream-<uid>` is a predictable name in a world-writable folder, so another local
user could create it first and plant a fake broker's sockets, or a symlink that root's
supervisord then writes through. Hence, as ssh-agent and tmux do:

- the broker (and `make run`, through `python -m services.common.rundir`) `prepare`s it:
  created 0700 (0770 with a socket group), or, if it exists, refused unless it is its own
  and writable by nobody else; it then holds `broker.lock` so one broker owns a folder
  (and the recorder `recorder.lock`: a second one would split the published channels);
- every process that connects to an ipc endpoint `check`s the folder first: it must be
  owned by itself or root, or, with a socket group, by that group, and no one else may
  write to it.

Every look goes through an O_NOFOLLOW file descriptor, so a symlink is never followed.

    python -m services.common.rundir [--socket-group GROUP] [FOLDER]

prepares FOLDER (default: the run folder) and exits 1 with the reason if it cannot, or if
another pipeline's broker owns it (`make run` runs this first).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import grp
import os
import pwd
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from services.common.errors import ConfigError

HINT = "Remove it or set ZMQSTREAM_RUN_DIR"


def default_run_dir() -> str:
    """$ZMQSTREAM_RUN_DIR, else /tmp/zmqstream-<uid>: a name others can guess, hence the checks."""
    return os.environ.get("ZMQSTREAM_RUN_DIR") or f"/tmp/zmqstream-{os.getuid()}"


class UntrustedRunDir(ConfigError):
    """The run folder belongs to someone else, is writable by others, or is a symlink."""


def group_id(name: str) -> int:
    """The id of the group `name` (or a number: the id itself, as go-plugin takes it too)."""
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"socket_group: there is no group {name!r} (create it or unset it)") from None


def require_member(group: str) -> None:
    """Refuse to start a pipeline process whose user is not in the socket group.

    Its sockets would stay out of the group's reach (the recorder's chgrp fails, the broker's
    folder cannot be given to the group): better one clear line at start than half a pipeline.
    """
    if not group or os.geteuid() == 0:  # root may chgrp to any group
        return
    gid = group_id(group)
    if gid == os.getegid() or gid in os.getgroups():
        return
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    raise ConfigError(
        f"socket_group {group}: user {user} is not in group {group}, so the pipeline cannot share "
        f"its sockets with it. Add it (usermod -aG {group} {user}) and restart the pipeline, "
        "or unset socket_group"
    )


def ipc_folder(endpoint: str) -> Path | None:
    """The folder of an ipc:// endpoint's socket file; None for tcp and inproc."""
    if not endpoint.startswith("ipc://"):
        return None
    return Path(endpoint.removeprefix("ipc://")).parent


def _open(folder: Path, access: int, what: str = "run folder", hint: str = HINT) -> int:
    """An fd on `folder` itself, never on what a symlink there points to.

    `access`: O_RDONLY to change it, O_PATH to look (which needs no permission on it).
    """
    try:
        return os.open(folder, access | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntrustedRunDir(
                f"{what} {folder} is a symlink or not a folder: refusing to use it. {hint}"
            ) from None
        raise ConfigError(f"cannot open {what} {folder}: {exc.strerror}") from None


def _refuse_writable_by_others(
    folder: Path, st: os.stat_result, gid: int | None, what: str = "run folder", hint: str = HINT
) -> None:
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != gid):
        raise UntrustedRunDir(
            f"{what} {folder} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"refusing to use it. {hint}"
        )


def prepare(folder: Path, group: str = "", *, what: str = "run folder", hint: str = HINT) -> None:
    """Create `folder` for a broker, or make sure the one there is ours and private.

    Mode 0700, or 0770 with `group`: the group's members (Grafana's user) may connect.
    `what` and `hint` name the folder in errors (the recorder's record folder is prepared alike).
    """
    os.close(hold(folder, group, what=what, hint=hint))


def hold(folder: Path, group: str = "", *, what: str = "run folder", hint: str = HINT) -> int:
    """`prepare`, and an fd on the folder checked, for work relative to it (`dir_fd`): a
    parent another user may write to cannot swap the folder for a symlink under us."""
    gid = group_id(group) if group else None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)  # mkdir never follows a symlink in its last component
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {folder}: {exc.strerror}") from None
    fd = _open(folder, os.O_RDONLY, what, hint)
    try:
        st = os.fstat(fd)
        me = os.geteuid()
        if st.st_uid != me:
            raise UntrustedRunDir(
                f"{what} {folder} is owned by uid {st.st_uid}, not you (uid {me}): refusing to use it. {hint}"
            )
        _refuse_writable_by_others(folder, st, gid, what, hint)
        if gid is not None:
            try:
                os.fchown(fd, -1, gid)
            except PermissionError:
                raise ConfigError(
                    f"cannot give {what} {folder} to group {group}: you must belong to it"
                ) from None
        os.fchmod(fd, 0o770 if gid is not None else 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check(folder: Path, group: str = "") -> None:
    """Refuse to connect into `folder` unless only trusted users can have made its sockets.

    Trusted: ourselves and root; with `group`, the members of that group. A folder that
    does not exist yet is fine: there is nothing to connect to until a broker makes it.
    """
    gid = group_id(group) if group else None
    try:
        fd = _open(folder, os.O_PATH)
    except ConfigError:
        if not os.path.lexists(folder):
            return
        raise
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    me = os.geteuid()
    if st.st_uid not in (me, 0) and not (gid is not None and st.st_gid == gid):
        raise UntrustedRunDir(
            f"run folder {folder} is owned by uid {st.st_uid}, not you (uid {me}) or root: "
            f"refusing to use it. {HINT}"
        )
    _refuse_writable_by_others(folder, st, gid)


def check_endpoint(endpoint: str, group: str = "") -> None:
    """`check` the folder of an ipc endpoint; tcp and inproc need nothing."""
    folder = ipc_folder(endpoint)
    if folder is not None:
        check(folder, group)


class FolderLock:
    """`<holder>.lock` in each run folder, flock'ed for as long as the holder (broker, recorder) lives."""

    def __init__(self, folders: Iterable[Path], holder: str = "broker") -> None:
        self.fds: list[int] = []
        try:
            for folder in sorted(set(folders)):
                self.fds.append(_lock(folder, holder))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _lock(folder: Path, holder: str) -> int:
    path = folder / f"{holder}.lock"
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise UntrustedRunDir(f"cannot open {path}: {exc.strerror}. {HINT}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"another {holder} (pid {owner}) owns run folder {folder}: one pipeline per folder. Stop that "
            "pipeline first, or give this one another folder (--run-dir or ZMQSTREAM_RUN_DIR)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def share_sockets(endpoints: Iterable[str], group: str) -> None:
    """Let `group` connect to the bound ipc sockets (chgrp, 0660); no-op without a group."""
    if not group:
        return
    gid = group_id(group)
    for endpoint in endpoints:
        if ipc_folder(endpoint) is not None:
            path = endpoint.removeprefix("ipc://")
            os.chown(path, -1, gid, follow_symlinks=False)
            os.chmod(path, 0o660)  # the folder is ours and private: nothing there is a planted link


@contextlib.contextmanager
def owned(endpoints: Iterable[str], group: str = "", holder: str = "broker") -> Iterator[None]:
    """Prepare and lock the folders of the ipc endpoints `holder` binds, while it runs."""
    folders = {f for f in map(ipc_folder, endpoints) if f is not None}
    for folder in folders:
        prepare(folder, group)
    lock = FolderLock(folders, holder)
    try:
        yield
    finally:
        lock.release()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.rundir", description=__doc__)
    parser.add_argument("folder", nargs="?", default=default_run_dir())
    parser.add_argument("--socket-group", default=os.environ.get("ZMQSTREAM_SOCKET_GROUP", ""))
    args = parser.parse_args(argv)
    try:
        prepare(Path(args.folder), args.socket_group)
        FolderLock([Path(args.folder)]).release()  # free: no other pipeline's broker runs there
    except ConfigError as exc:
        print(f"zmqstream: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
