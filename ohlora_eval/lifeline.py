"""Worker processes die with the command that started them, even when it is killed with
SIGKILL (no handler runs then, so the command cannot take them down itself).

Two watches. A command marks itself (``mark_command``: its pid in ``OHLORA_COMMAND_PID``,
which every process it starts inherits) and forks a small guardian that waits for it to
end, then kills every process that carries the mark (a parallel sweep's loky workers, idle
or not, and their resource trackers; a local Ray it started). And a forked worker, whose
environment shows no mark, watches for itself: a thread in it checks twice a second that its
parent is still the same (``start``, in the landmark scorer's initializer).

Imports nothing of the package, so every layer can use it (docs/architecture.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

COMMAND_PID = "OHLORA_COMMAND_PID"
EVERY_S = 0.5
_watching_in = 0  # the pid whose watcher runs (a forked child inherits this, not the thread)
_lock = threading.Lock()


_guarded = 0  # the pid whose guardian runs


def mark_command() -> None:
    """This process is a command: processes it starts from now on carry its pid, and a
    guardian process ends every one of them that is left when the command has gone (a
    SIGKILL runs no handler: a worker idle between jobs never gets to watch for itself)."""
    global _guarded
    os.environ[COMMAND_PID] = str(os.getpid())
    if _guarded != os.getpid() and sys.platform.startswith("linux"):
        _guarded = os.getpid()
        _start_guardian()


def _marked(pid: int) -> list[int]:
    """Processes started (with exec) after command ``pid`` marked itself: their environment
    carries the mark. Forked workers (no exec) keep the parent's first environment, so they
    watch for themselves instead (``start``)."""
    mark = f"{COMMAND_PID}={pid}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (pid, os.getpid()):
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if mark in fh.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def _start_guardian() -> None:
    """Fork a small process that waits for this one to end, then SIGKILLs what is left of it."""
    command = os.getpid()
    if os.fork() != 0:
        return
    try:  # the guardian: no signal of the terminal's, no inherited file, only its watch
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 65536)
        while os.getppid() == command:
            time.sleep(EVERY_S)
        for _ in range(3):  # a worker may be starting another as it goes
            for pid in _marked(command):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(EVERY_S)
    finally:
        os._exit(0)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this one included; another user's too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(command_pid: int | None = None, every_s: float = EVERY_S) -> None:
    """Watch this process's parent (and ``command_pid``, when given) from a daemon thread;
    when either is gone, end this process. Once per process; a no-op in the command's own
    process."""
    global _watching_in
    if command_pid == os.getpid():
        return
    with _lock:
        if _watching_in == os.getpid():
            return
        _watching_in = os.getpid()
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(every_s)
            if os.getppid() != parent or (command_pid is not None and not alive(command_pid)):
                os._exit(137)  # no cleanup: what it holds belongs to the dead command

    threading.Thread(target=watch, name="ohlora-lifeline", daemon=True).start()
