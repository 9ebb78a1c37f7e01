"""What every script's command line shares: the one-line error, argparse bounds, progress, the quiet start.

* ``errors.UserError`` is an error the user can fix (a bad path, a refused option); a script's
  ``main`` raises it and :func:`run_cli` prints it as one line and exits with status 2.
  Library functions raise ``ValueError`` for values out of their range instead; the command
  lines check their options' bounds with argparse types (:func:`bounded`, :func:`checked`)
  before any work, and :class:`ArgumentParser` says what is wrong in one line.
* :func:`run_cli` turns SIGTERM into an exception like Ctrl-C's, so the ``finally`` blocks that
  remove temporary files run on both, and releases the folder locks the command took
  (``files.lock_folder``).
* :func:`progress_bar`, :class:`Steps` and :func:`timed` report a long command's progress and
  time its stages.
* Every script's parser has ``--verbose``; without it TensorFlow's start-up log is hidden
  (:func:`quiet_tensorflow`).

Files that are never half-written, full disks and folder locks are in ``separation/files.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import math
import os
import signal
import sys
import tempfile
import threading
import time

from separation import files
from separation.errors import UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that cleanup code runs on both."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_cli(main, argv=None) -> int:
    """Run a script's ``main(argv)``: a :class:`UserError` becomes one line on stderr and exit 2.

    Ctrl-C (exit 130) and SIGTERM (exit 143) stop it through an exception, so temporary files
    are removed on the way out; file names that are not valid UTF-8 are printed with escapes.
    The folder locks that ``main`` took are released when it returns.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")  # a file name that is not UTF-8 is printable
    on_term, held = None, files.held_locks()
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
        files.release_locks(keep=held)
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

    ``TF_CPP_MIN_LOG_LEVEL=3`` hides TensorFlow's own messages, but not the lines its libraries
    print through absl while they load, before any log level applies ("WARNING: All log messages
    before absl::InitializeLog() ..."); no setting reaches those, so the import of ``tensorflow``
    runs with file descriptor 2 sent to a temporary file (:class:`_QuietImport`), shown only if
    the import fails. Where fd 2 cannot be redirected the import runs as it is and the lines show.
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
    """Send file descriptor 2 to a temporary file for the block; replay it if the block raises.

    Where that is impossible (no fd 2, as under Windows' pythonw; no temporary file) the block
    runs with stderr as it is: hiding a log must never stop an import.
    """
    _flush_stderr()
    try:
        log = tempfile.TemporaryFile()
    except OSError:
        log = None
    saved = None if log is None else _redirect_fd2(log.fileno())
    try:
        yield
    except Exception:  # an interrupt (Ctrl-C) needs no log
        if saved is not None:
            os.dup2(saved, 2)
            log.seek(0)
            if sys.stderr is not None:
                sys.stderr.write(log.read().decode(errors="replace"))
        raise
    finally:
        if saved is not None:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
        if log is not None:
            log.close()


def _redirect_fd2(target: int) -> int | None:
    """Point file descriptor 2 at ``target``: a copy of the former fd 2 to restore it from, or
    None (fd 2 unchanged) where the platform refuses."""
    try:
        saved = os.dup(2)
    except OSError:
        return None
    try:
        os.dup2(target, 2)
    except OSError:
        os.close(saved)
        return None
    return saved


def _flush_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


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
