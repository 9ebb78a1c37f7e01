"""What every script shares: the one-line error, and files that are never half-written.

* :class:`UserError` is an error the user can fix (a bad path, a refused option); a script's
  ``main`` raises it and :func:`run_cli` prints it as one line and exits with status 2.
  Library functions raise ``ValueError`` for values out of their range instead; the command
  lines check their options' bounds with argparse types (:func:`bounded`) before any work, and
  :class:`ArgumentParser` says what is wrong in one line.
* :func:`atomic_output` and :func:`atomic_write_text` write through a temporary file beside the
  target and rename it into place, so a file is complete or absent, whatever kills the process.
* Every script's parser has ``--verbose``; without it TensorFlow's start-up log is hidden
  (:func:`quiet_tensorflow`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """An error the user can fix. Scripts print it as one line and exit with status 2."""


def run_cli(main, argv=None) -> int:
    """Run a script's ``main(argv)``: a :class:`UserError` becomes one line on stderr and exit 2."""
    try:
        return main(argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


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


def atomic_write_text(path, text: str) -> None:
    """Write a text file through a temporary file and a rename: never half-written."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


class atomic_output:
    """Context manager yielding a temporary path beside ``path``, renamed onto it on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """

    def __init__(self, path, suffix: str | None = None):
        self.path = Path(path)
        self.suffix = self.path.suffix if suffix is None else suffix

    def __enter__(self) -> Path:
        directory = self.path.parent
        if not directory.is_dir():
            raise UserError(f"{directory}: output folder does not exist")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part" + self.suffix, dir=directory)
        except PermissionError:
            raise UserError(f"{directory}: output folder is not writable") from None
        except OSError as err:
            raise UserError(f"{directory}: cannot write there ({err.strerror})") from None
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
            self.tmp.unlink(missing_ok=True)
        return False
