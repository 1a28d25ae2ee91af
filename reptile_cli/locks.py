"""One writer at a time: operating-system locks on run directories, sweep directories, evaluation outputs and
dataset preparations.

A lock is ``flock(2)`` on a lock file (``.reptile.lock`` in a run or sweep directory, ``.<name>.lock`` beside an
evaluation output, ``.prepare.lock`` in a dataset folder). The kernel releases it when the holding process ends,
however it ends (return, exception, signal, ``kill -9``), so a lock left by a dead process is never mistaken for
a live one. The holder writes who it is (pid, host, start time, command) into the file, for the message a
second process gets, and removes the file when it lets go: a lock file that exists but is not locked was left
by a process that died (:func:`is_held`). A process that got the lock on a file removed meanwhile tries again
on the new one (it compares the inodes), so removing the file never lets two processes hold the lock.

Shared file systems: on Linux, ``flock`` on an NFS mount is carried out as a whole-file NFS byte-range lock,
which the server arbitrates between machines (NFSv4, or NFSv3 with its lock manager); a mount with
``-o nolock`` (or ``local_lock=all``) keeps locks local to each machine, and then two machines can both
"hold" a run directory. Lustre needs its ``flock`` mount option. Under torchrun only rank 0 takes the lock.

Locks are held per process: a lock this process already holds is taken again without blocking (a count), so
the CLI can lock a run directory before Hydra writes into it and the job can lock it again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from reptile_cli.errors import EXIT_USAGE, ReptileError

LOCK_NAME = ".reptile.lock"


class Locked(ReptileError):
    """Another live process holds the lock (exit code 2: nothing was done)."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


_HELD: dict[str, FileLock] = {}


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing, never truncated by a process that does not get it).

    Args:
        path: the lock file.
        what: what it protects, for messages (e.g. ``run directory /x``).
    """

    def __init__(self, path: Path, what: str, instead: str = "use another directory"):
        self.path, self.what, self.instead = Path(path), what, instead
        self.fd: int | None = None
        self.count = 0
        self.made_dir = False  # the lock created its folder: removed again on release if left empty

    def acquire(self, wait: bool = False, retry_s: float = 0.5, on_wait=None) -> FileLock:
        """Take the lock. Without ``wait``, try for ``retry_s`` seconds (a probe of :func:`is_held` holds the
        lock for a moment) and raise :class:`Locked` naming the holder; with ``wait``, block until it is free
        (``on_wait(holder)`` is called once first).

        Raises:
            Locked: held by another live process (``wait=False``).
            ReptileError: the lock file cannot be created (read-only or full file system, permissions).
        """
        key = str(self.path.absolute())
        if key in _HELD:
            held = _HELD[key]
            held.count += 1
            return held
        deadline = time.monotonic() + retry_s
        told = False
        self.made_dir = not self.path.parent.exists()
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise ReptileError(f"cannot write {self.path.parent}: {err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait and told else fcntl.LOCK_NB))
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # its holder removed it as we waited: lock the file that is there now
                continue
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise ReptileError(f"cannot lock {self.path}: {err.strerror or err}") from None
                if wait:
                    if on_wait is not None and not told:
                        on_wait(read_holder(self.path))
                    told = True
                    os.close(fd)
                    continue
                os.close(fd)
                if time.monotonic() > deadline:
                    raise Locked(f"{self.what} is in use by {describe(read_holder(self.path))}: wait for it to end, "
                                 f"or {self.instead}") from None
                time.sleep(0.05)
        self.fd, self.count = fd, 1
        _HELD[key] = self
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)[:300]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, only the holder's description is missing
        return self

    def release(self) -> None:
        """Drop one hold; the last one removes the lock file (still holding it), unlocks and closes it."""
        self.count -= 1
        if self.count > 0 or self.fd is None:
            return
        _HELD.pop(str(self.path.absolute()), None)
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only remount: the file stays, unlocked, and reads as left by a dead process
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        if self.made_dir:
            try:
                self.path.parent.rmdir()  # only when empty: a call that wrote nothing leaves no folder
            except OSError:
                pass

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a holder may have removed it meanwhile)."""
    try:
        st, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def read_holder(path: Path) -> dict:
    """What the last holder of a lock file wrote (pid, host, started, command), or ``{}``."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    if not holder:
        return "another process (starting)"
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    return f"process {holder.get('pid')}{where} (since {holder.get('started')}: {holder.get('command', '?')})"


def lock_dir(directory: Path, what: str = "run directory") -> FileLock:
    """Take the lock of a run or sweep directory (``DIR/.reptile.lock``) without waiting.

    Raises:
        Locked: another live process holds it (the message names the directory and the process).
    """
    directory = Path(directory)
    return FileLock(directory / LOCK_NAME, f"{what} {directory}").acquire()


def lock_beside(path: Path, what: str) -> FileLock:
    """Take the lock of one output file (``.<name>.lock`` beside it) without waiting."""
    path = Path(path)
    return FileLock(path.with_name(f".{path.name}.lock"), f"{what} {path}", "give another output=FILE").acquire()


def lock_preparation(folder: Path, progress: bool = True, name: str = "prepare") -> FileLock:
    """Wait for, then take, the lock of a dataset preparation (``FOLDER/.NAME.lock``): a second preparation of
    the same data waits, then finds the first one's result and reuses it.

    Raises:
        ReptileError: the folder cannot be created or written (a read-only data root, a full disk).
    """
    folder = Path(folder)

    def say(holder: dict) -> None:
        if progress:
            print(f"waiting for another preparation in {folder} ({describe(holder)})", file=sys.stderr)

    return FileLock(folder / f".{name}.lock", f"dataset folder {folder}").acquire(wait=True, on_wait=say)


def is_held(directory: Path) -> bool | None:
    """Whether a live process holds ``DIR/.reptile.lock``: True; False when the lock file is there but unlocked
    (its holder died without letting go: killed, or its machine stopped); None without a lock file (nobody
    holds it now, and the last holder, if any, ended cleanly). This process's own locks count as held.
    """
    path = Path(directory) / LOCK_NAME
    if str(path.absolute()) in _HELD:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
