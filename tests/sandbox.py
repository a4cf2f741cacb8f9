"""The sandbox a packaged Grafana's plugins run in (grafana-server.service), for one process.

What the unit's settings do to the plugin, rebuilt with namespaces (run as root):
- PrivateUsers=true: a user namespace mapping only root and Grafana's user and group,
  one to one; every other owner reads as nobody/nogroup;
- PrivateTmp=true: /tmp and /var/tmp fresh and empty (tmpfs, 1777);
- ProtectHome=true: /home, /root and /run/user empty and inaccessible (tmpfs, mode 0);
- ProtectSystem=full: /usr and /etc read-only;
- User=grafana, Group=grafana (no supplementary groups), UMask=0027, NoNewPrivileges=true.

util-linux `unshare --map-users` needs newuidmap and /etc/subuid ranges for root, so the
namespace is made here (unshare(2), and a helper writing the maps as root, as unshare's
own helper does). Not rebuilt: RestrictAddressFamilies, PrivateDevices, RemoveIPC.
`wrapper` writes an executable that enters it and execs the plugin, keeping its pid.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_NO_NEW_PRIVS = 38
LOCKED = MS_NOSUID | MS_NODEV | MS_NOEXEC
"""Flags of a mount a user namespace may not clear, so a read-only remount keeps them."""

libc = ctypes.CDLL(None, use_errno=True)


def _call(name: str, *args: object) -> None:
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}{args}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    encoded = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _call("mount", *encoded[:3], flags, encoded[3])


def enter(uid: int, gid: int) -> None:
    """Move this process into the sandbox as `uid`:`gid`."""
    read, write = os.pipe()
    helper = os.fork()
    if helper == 0:  # still outside: writes the maps once the parent has its namespace
        os.close(write)
        os.read(read, 1)
        parent = os.getppid()
        Path(f"/proc/{parent}/uid_map").write_text(f"0 0 1\n{uid} {uid} 1\n")
        Path(f"/proc/{parent}/gid_map").write_text(f"0 0 1\n{gid} {gid} 1\n")
        os._exit(0)
    os.close(read)
    _call("unshare", CLONE_NEWUSER | CLONE_NEWNS)
    os.write(write, b"x")
    os.close(write)
    if os.waitpid(helper, 0)[1] != 0:
        raise OSError("the helper could not write the user namespace's maps")
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    for private in ("/tmp", "/var/tmp"):
        _mount("tmpfs", private, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for hidden in ("/home", "/root", "/run/user"):
        if os.path.isdir(hidden):
            _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0")
    for frozen in ("/usr", "/etc"):
        _mount(frozen, frozen, None, MS_BIND | MS_REC, None)
        kept = os.statvfs(frozen).f_flag & LOCKED
        _mount(None, frozen, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept, None)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.umask(0o027)
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def wrapper(folder: Path, uid: int, gid: int, executable: Path, python: str) -> Path:
    """An executable in `folder` that runs `executable` in the sandbox, for PluginHost to launch.

    `python`: a system interpreter (outside /root: its lazy imports would find it hidden).
    """
    path = folder / "sandboxed-plugin"
    path.write_text(
        f"#!{python}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"import os, sandbox\nsandbox.enter({uid}, {gid})\n"
        f"os.execv({str(executable)!r}, [{str(executable)!r}])\n"
    )
    path.chmod(0o700)
    return path
