"""Files that are never half-written, full disks in one line, and one process at a time per folder.

* :func:`atomic_output` and :func:`atomic_write_text` write through a temporary file beside the
  target and rename it into place, so a file is complete or absent, whatever kills the process;
  :func:`remove_partial` removes what a killed process left.
* A full disk is one line, ``no space left on DEVICE while writing FILE`` (:func:`disk_full`,
  :func:`no_space`).
* :func:`lock_folder` lets one process at a time write a folder (an output or run folder);
  ``cli.run_cli`` releases the locks when the command ends (:func:`release_locks`).

The locks use Linux and macOS calls; where they are missing (Windows) folders go unlocked and
everything else works the same (docs/design.md, "On macOS and Windows").
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from separation.errors import UserError


def atomic_write_text(path, text: str) -> None:
    """Write a text file through a temporary file and a rename: never half-written; a full disk
    is one line (:func:`no_space`)."""
    with atomic_output(path, full_disk=True) as tmp:
        Path(tmp).write_text(text)


class atomic_output:
    """Context manager yielding a temporary path beside ``path``, renamed onto it on success.

    ``suffix`` ends the temporary file's name (default: ``path``'s), for writers that choose
    the format by the name. On an exception the temporary file is removed and ``path`` is left
    as it was. libsndfile's failed write on a full disk becomes the one line of
    :func:`no_space`; so does an ``OSError`` of a full disk with ``full_disk=True`` (without
    it, the OSError goes on to the caller, who may say more: train.py's "the previous
    checkpoint is intact").
    """

    def __init__(self, path, suffix: str | None = None, full_disk: bool = False):
        self.path = Path(path)
        self.suffix = self.path.suffix if suffix is None else suffix
        self.full_disk = full_disk

    def __enter__(self) -> Path:
        directory = self.path.parent
        if not directory.is_dir():
            raise UserError(f"{directory}: output folder does not exist")
        try:
            fd, name = tempfile.mkstemp(prefix=temp_prefix(self.path.name), suffix=".part" + self.suffix, dir=directory)
        except PermissionError:
            raise UserError(f"{directory}: output folder is not writable") from None
        except OSError as err:
            raise UserError(no_space(self.path) if disk_full(err, directory)
                            else f"{directory}: cannot write there ({err.strerror})") from None
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                # mkstemp makes the file private (0600); give it the mode a plain open() would
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.tmp, 0o666 & ~umask)
                os.replace(self.tmp, self.path)
            except OSError as err:
                self.tmp.unlink(missing_ok=True)
                raise UserError(f"{self.path}: cannot write ({err.strerror})") from None
        else:
            # libsndfile's bare "system error" becomes the full-disk line here, judged before the
            # partial file is removed; an OSError goes on, for the caller's own words (a checkpoint)
            full = (self.full_disk or not isinstance(exc, OSError)) and disk_full(exc, self.tmp.parent)
            self.tmp.unlink(missing_ok=True)
            if full:
                raise UserError(no_space(self.path)) from None
        return False


def temp_prefix(name: str) -> str:
    """Prefix of the temporary file or folder written for ``name``: ``.NAME.`` (hidden), or a
    short hash of a long name, since names are limited to 255 bytes and the temporary one adds
    a random part and ``.part``. The files those names start are removed by
    :func:`remove_partial` when a killed process left them."""
    raw = os.fsencode(name)
    return f".{name}." if len(raw) <= 64 else f".{hashlib.sha1(raw).hexdigest()[:12]}."


def remove_partial(folder) -> None:
    """Remove the temporary files and folders (``.*.part*``) that a killed process left in ``folder``.

    Call it only while holding the folder's lock (:func:`lock_folder`): another process's are in use.
    """
    for path in Path(folder).glob(".*.part*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Full disks
# --------------------------------------------------------------------------------------------

#: Free space under which a failed write is blamed on a full disk (libsndfile does not say why).
LOW_SPACE = 2**20


def disk_full(err: BaseException | None, folder) -> bool:
    """Whether ``err``, raised while writing into ``folder``, means that its disk is full.

    An ``OSError`` says so (ENOSPC, or EDQUOT for a quota where the platform has one);
    libsndfile reports a failed write as a bare "system error" (a ``RuntimeError``), judged by
    the space left on the disk.
    """
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if isinstance(err, RuntimeError):
        try:
            return shutil.disk_usage(folder).free < LOW_SPACE
        except OSError:
            return False
    return False


def no_space(path) -> str:
    """The one-line message of a full disk: ``no space left on DEVICE while writing FILE``,
    DEVICE being the mount point (a drive on Windows) that holds ``path``."""
    device = Path(os.path.abspath(path))
    while not os.path.ismount(device) and device.parent != device:
        device = device.parent
    return f"no space left on {device} while writing {path}; free some space there or write elsewhere"


# --------------------------------------------------------------------------------------------
# One process at a time per folder
# --------------------------------------------------------------------------------------------

#: Linux's table of the file locks held, read for the pid of a lock's holder.
PROC_LOCKS = Path("/proc/locks")

#: Folders this process holds a lock on: (device, inode) -> the open descriptor holding it.
_held_locks: dict[tuple[int, int], int] = {}


def lock_folder(folder, fix: str = "wait for it to finish or choose another folder") -> None:
    """Let only this process write ``folder`` (an existing output or run folder) from now on.

    An advisory lock (``fcntl.flock``) on the folder itself, held until the command ends
    (``cli.run_cli`` calls :func:`release_locks`) or the process exits. Another process asking
    for the same folder is refused at once with a :class:`UserError` naming the holder's pid
    (:func:`lock_holder`) and ``fix``; asking again in this process is a no-op. The kernel
    releases the lock when its holder exits, however it dies, so a stale lock cannot outlive a
    killed run. The folder goes unlocked where it cannot be locked: no ``fcntl`` (Windows), a
    folder that cannot be opened, a file system without ``flock``.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        return
    st = os.stat(folder)
    if (st.st_dev, st.st_ino) in _held_locks:
        return
    try:
        # O_DIRECTORY where the platform has it: refuse to open anything but a folder
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a folder we may write but not list
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = lock_holder(folder)
        raise UserError(f"{folder}: in use by another process (pid {holder or 'unknown'}); {fix}") from None
    except OSError:  # a file system without flock (some network ones)
        os.close(fd)
        return
    _held_locks[st.st_dev, st.st_ino] = fd


def held_locks() -> set[tuple[int, int]]:
    """The keys of the folder locks this process holds now, for :func:`release_locks`' ``keep``."""
    return set(_held_locks)


def release_locks(keep=()) -> None:
    """Release the folder locks of :func:`lock_folder`, except those whose keys are in ``keep``
    (:func:`held_locks` taken earlier: the locks taken since then are released)."""
    for key in [k for k in _held_locks if k not in keep]:
        os.close(_held_locks.pop(key))  # closing the only descriptor releases the lock


def lock_holder(path) -> int | None:
    """The pid holding a ``flock`` on ``path``, from Linux's :data:`PROC_LOCKS`; None where it
    is unknown (no such lock, or no ``/proc``: macOS, Windows)."""
    if not hasattr(os, "major"):  # Windows
        return None
    st = os.stat(path)
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        lines = PROC_LOCKS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2156378 0 EOF"; waiters' lines have "->" after the number
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        major, minor, inode = fields[5].split(":")
        if (int(major, 16), int(minor, 16), int(inode)) == wanted:
            return int(fields[4])
    return None
