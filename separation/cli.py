"""What every script shares: the one-line error, and files that are never half-written.

* :class:`UserError` is an error the user can fix (a bad path, a refused option); a script's
  ``main`` raises it and :func:`run_cli` prints it as one line and exits with status 2.
  Library functions raise ``ValueError`` for values out of their range instead; the command
  lines check their options' bounds with argparse types (:func:`bounded`) before any work, and
  :class:`ArgumentParser` says what is wrong in one line.
* :func:`atomic_output` and :func:`atomic_write_text` write through a temporary file beside the
  target and rename it into place, so a file is complete or absent, whatever kills the process;
  a full disk is one line, ``no space left on DEVICE while writing FILE`` (:func:`no_space`).
* :func:`run_cli` turns SIGTERM into an exception like Ctrl-C's, so the ``finally`` blocks that
  remove temporary files run on both.
* :func:`lock_folder` lets one process at a time write a folder (an output or run folder).
* :func:`progress_bar`, :class:`Steps` and :func:`timed` report a long command's progress and
  time its stages.
* Every script's parser has ``--verbose``; without it TensorFlow's start-up log is hidden
  (:func:`quiet_tensorflow`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import importlib.abc
import importlib.util
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path


class UserError(Exception):
    """An error the user can fix. Scripts print it as one line and exit with status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that cleanup code runs on both."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_cli(main, argv=None) -> int:
    """Run a script's ``main(argv)``: a :class:`UserError` becomes one line on stderr and exit 2.

    Ctrl-C (exit 130) and SIGTERM (exit 143) stop it through an exception, so temporary files
    are removed on the way out; file names that are not valid UTF-8 are printed with escapes.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")  # a file name that is not UTF-8 is printable
    on_term, held = None, set(_held_locks)
    if threading.current_thread() is threading.main_thread():
        on_term = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return main(argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        release_locks(keep=held)
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


def first_line(err: Exception) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, refusing a bad command line in one line (``error: argument --x: why``,
    and where to read more) with exit status 2, where argparse's own prints its usage first.

    It adds ``--verbose`` to every script (and subcommand) that has no option of that name, and
    :meth:`parse_args` hides TensorFlow's start-up log unless ``--verbose`` was given
    (:func:`quiet_tensorflow`): scripts parse their command line before any heavy import.
    """

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        # Subcommands' parsers come through here too, so `script.py command --verbose` works.
        if self.add_help and "--verbose" not in self._option_string_actions:
            self.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                              help="show TensorFlow's start-up log (hidden by default)")
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        namespace = super().parse_args(args, namespace)
        # `is True`: a script's own --verbose N (train.py: Keras' progress output) is not this flag.
        quiet_tensorflow(verbose=getattr(namespace, "verbose", False) is True)
        return namespace


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hide TensorFlow's C++ start-up log (the oneDNN notice; CUDA errors on a machine without a
    GPU) unless ``verbose``. It acts only if TensorFlow is not imported yet.

    The log has two sources. TensorFlow's own messages obey ``TF_CPP_MIN_LOG_LEVEL`` (3: errors
    too, as CUDA's "failed call to cuInit" on a machine without GPU is one). The lines its
    libraries print while they load go through absl's log before any level is set ("WARNING: All
    log messages before absl::InitializeLog() ..."), which no setting reaches: so the import of
    ``tensorflow`` itself runs with stderr sent to a temporary file (:class:`_QuietImport`),
    printed only if the import fails.
    """
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if not any(isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """An import hook for ``tensorflow`` alone, used once: the module is found as usual, and
    loaded with file descriptor 2 (stderr) redirected by :func:`_stderr_to_file`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; the usual finders find it
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module):
                with _stderr_to_file():
                    load(module)

            spec.loader.exec_module = exec_module
        return spec


@contextlib.contextmanager
def _stderr_to_file():
    """Send file descriptor 2 to a temporary file for the block; replay it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            except Exception:  # an interrupt (Ctrl-C) needs no log
                os.dup2(saved, 2)
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace"))
                raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def bounded(kind=float, low=None, high=None, *, low_open: bool = False, high_open: bool = False):
    """An argparse ``type`` converting to ``kind`` and refusing values outside [low, high].

    ``low_open``/``high_open`` exclude the bound itself. argparse turns the refusal into one
    line naming the option, and exit status 2, before the script does any work.
    """
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be in {left}{'-inf' if low is None else low}, "
                f"{'inf' if high is None else high}{right}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def checked(check):
    """An argparse ``type`` from a function that converts a value or raises ``ValueError``: argparse
    prints that error's message (one line naming the option, exit status 2), not its own."""
    def convert(text: str):
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = check.__name__
    return convert


# --------------------------------------------------------------------------------------------
# Progress and timing
# --------------------------------------------------------------------------------------------


def progress_bar(label: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="step", leave=False, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


class Steps:
    """A ``progress(n)`` callback counting the steps of a task done ``n`` at a time, reporting
    ``progress(done, total)`` to the callback it wraps (a no-op when that is None)."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


@contextlib.contextmanager
def timed(timings: dict | None, stage: str):
    """Add the block's wall time to ``timings[stage]`` (a no-op when ``timings`` is None)."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def atomic_write_text(path, text: str) -> None:
    """Write a text file through a temporary file and a rename: never half-written; a full disk
    is one line (:func:`no_space`)."""
    with atomic_output(path, full_disk=True) as tmp:
        Path(tmp).write_text(text)


class atomic_output:
    """Context manager yielding a temporary path beside ``path``, renamed onto it on success.

    On an exception the temporary file is removed and ``path`` is left as it was. libsndfile's
    failed write on a full disk becomes the one line of :func:`no_space`; so does an ``OSError``
    of a full disk with ``full_disk=True`` (without it, the OSError goes on to the caller, who
    may say more: train.py's "the previous checkpoint is intact").
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

    An ``OSError`` says so (ENOSPC, or EDQUOT for a quota); libsndfile reports a failed write as
    a bare "system error" (a ``RuntimeError``), judged by the space left on the disk.
    """
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(err, RuntimeError):
        try:
            return shutil.disk_usage(folder).free < LOW_SPACE
        except OSError:
            return False
    return False


def no_space(path) -> str:
    """The one-line message of a full disk: ``no space left on DEVICE while writing FILE``."""
    device = Path(os.path.abspath(path))
    while not os.path.ismount(device):
        device = device.parent
    return f"no space left on {device} while writing {path}; free some space there or write elsewhere"


# --------------------------------------------------------------------------------------------
# One process at a time per folder
# --------------------------------------------------------------------------------------------


#: Folders this process holds a lock on: (device, inode) -> the open descriptor holding it.
_held_locks: dict[tuple[int, int], int] = {}


def lock_folder(folder, fix: str = "wait for it to finish or choose another folder") -> None:
    """Let only this process write ``folder`` (an existing output or run folder) from now on.

    An advisory lock (``fcntl.flock``) on the folder itself, held until the command ends
    (:func:`run_cli` releases it) or the process exits. Another process asking for the same
    folder is refused at once with a :class:`UserError` naming the holder's pid (from
    ``/proc/locks``) and ``fix``; asking again in this process is a no-op. The kernel releases
    the lock when its holder exits, however it dies, so a stale lock cannot outlive a killed
    run and no lock file is left behind. Where the file system has no ``flock``, or the folder
    cannot be opened for reading, the folder goes unlocked.
    """
    import fcntl

    st = os.stat(folder)
    if (st.st_dev, st.st_ino) in _held_locks:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a folder we may write but not list: it goes unlocked
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = lock_holder(folder)
        raise UserError(f"{folder}: in use by another process (pid {holder or 'unknown'}); {fix}") from None
    except OSError:  # a file system without flock (some network ones): it goes unlocked
        os.close(fd)
        return
    _held_locks[st.st_dev, st.st_ino] = fd


def release_locks(keep=()) -> None:
    """Release the folder locks of :func:`lock_folder`, except those whose keys are in ``keep``."""
    for key in [k for k in _held_locks if k not in keep]:
        os.close(_held_locks.pop(key))  # closing the only descriptor releases the lock


def lock_holder(path) -> int | None:
    """The pid holding a ``flock`` on ``path``, from Linux's ``/proc/locks`` (None if unknown)."""
    st = os.stat(path)
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        lines = Path("/proc/locks").read_text().splitlines()
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
