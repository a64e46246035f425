"""Who listens on a port of 127.0.0.1: a free port is None, a taken one names the program
(Linux: ``/proc/net/tcp`` -> socket inode -> the processes holding it)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = "127.0.0.1"


def port_holder(port: int) -> str | None:
    """What listens on ``port`` of 127.0.0.1 (a command line when it can be found), or None
    when the port is free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return None
        except OSError:
            pass
    who = listener(port)
    return who or "another program"


def listener(port: int) -> str | None:
    """The process listening on ``port`` (Linux: /proc/net/tcp -> socket inode -> pid).
    Where several share the socket (a server and the workers it forked or spawned), the
    one whose parent does not hold it is named: the program the user started."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                    inodes.add(parts[9])
        holders = [pid for pid in filter(str.isdigit, os.listdir("/proc")) if _holds(pid, inodes)]
    except OSError:
        return None
    if not holders:
        return None
    top = [pid for pid in holders if _parent(pid) not in holders] or holders
    pid = min(top, key=int)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return f"pid {pid}"
    more = f" (and {len(holders) - 1} of its workers)" if len(holders) > 1 else ""
    return f"pid {pid}: {cmd.decode(errors='replace').strip()[:120]}{more}"


def _holds(pid: str, inodes: set[str]) -> bool:
    """Whether process ``pid`` has one of the sockets ``inodes`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _parent(pid: str) -> str | None:
    """The parent pid of ``pid`` (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[1]
