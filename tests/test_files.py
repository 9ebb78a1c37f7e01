"""Tests of separation/files.py, and of the scripts' code paths where a platform lacks what the
folder locks, the quiet TensorFlow import and the benchmarks use on Linux (macOS, Windows): each
missing piece is simulated, and the work still gets done."""

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from separation import cli, files, runs, stems
from separation.audio import DEFAULT_PARAMS
from separation.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def no_locks_left():
    """The test's folder locks are released after it, as run_cli releases a command's."""
    held = files.held_locks()
    yield
    files.release_locks(keep=held)


def separate_into(out: Path) -> Path:
    """What inference.py does with its output folder: prepare it (the lock), write a song's stems."""
    vocals = out / "song" / "vocals.wav"
    stems.prepare_output(out, [vocals], overwrite=False)
    stems.write_stems({vocals: np.zeros((800, 2), np.float32)}, 8000)
    return vocals


def prepare_run(run_dir: Path) -> None:
    """What train.py does with its run folder before training."""
    import train

    assert runs.prepare_run_dir(run_dir, train.TrainConfig(), DEFAULT_PARAMS) is None
    assert (run_dir / runs.CONFIG_FILE).is_file()


# ---------------------------------------------------------------------------- writing files


def test_atomic_output_writes_the_whole_file_or_leaves_the_old_one(tmp_path):
    path = tmp_path / "summary.txt"
    files.atomic_write_text(path, "first\n")
    with pytest.raises(ValueError), files.atomic_output(path) as tmp:
        tmp.write_text("half")
        raise ValueError("killed")
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["summary.txt"]
    with pytest.raises(UserError, match="output folder does not exist"), files.atomic_output(tmp_path / "no" / "x"):
        pass


def test_remove_partial_removes_what_a_killed_write_left(tmp_path):
    long_name = "x" * 300
    assert files.temp_prefix("song") == ".song." and len(files.temp_prefix(long_name)) == 14
    (tmp_path / ".song.k7x2.part").mkdir()
    (tmp_path / ".summary.txt.3jd8.part.txt").write_text("half")
    (tmp_path / "kept.wav").write_text("whole")
    files.remove_partial(tmp_path)
    assert os.listdir(tmp_path) == ["kept.wav"]


def test_a_full_disk_is_judged_without_edquot(monkeypatch, tmp_path):
    """Windows' errno has no EDQUOT."""
    monkeypatch.delattr(errno, "EDQUOT", raising=False)
    assert files.disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert not files.disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    assert not files.disk_full(OSError("no errno"), tmp_path)
    assert files.no_space(tmp_path / "a.wav").startswith("no space left on /")


# ---------------------------------------------------------------------------- folder locks


def test_a_folder_is_locked_against_other_processes(tmp_path, no_locks_left, locked_elsewhere):
    out = tmp_path / "out"
    out.mkdir()
    before = files.held_locks()  # other tests' folders, locked in this process
    with locked_elsewhere(out) as holder:
        with pytest.raises(UserError, match=f"in use by another process \\(pid {holder.pid}\\); choose"):
            files.lock_folder(out, "choose another")
    files.lock_folder(out)
    files.lock_folder(out)  # again in this process: a no-op
    assert len(files.held_locks() - before) == 1
    files.release_locks(keep=before)
    assert files.held_locks() == before


def test_without_fcntl_folders_go_unlocked_and_the_scripts_still_write(monkeypatch, tmp_path, no_locks_left):
    """Windows has no fcntl."""
    monkeypatch.setitem(sys.modules, "fcntl", None)
    before = files.held_locks()
    assert separate_into(tmp_path / "out").is_file()
    prepare_run(tmp_path / "run")
    files.atomic_write_text(tmp_path / "out" / "summary.txt", "done\n")
    assert files.held_locks() == before


def test_without_o_directory_folders_are_still_locked(monkeypatch, tmp_path, no_locks_left):
    """A platform with fcntl but without os.O_DIRECTORY opens the folder read-only instead."""
    monkeypatch.delattr(os, "O_DIRECTORY", raising=False)
    before = files.held_locks()
    assert separate_into(tmp_path / "out").is_file()
    prepare_run(tmp_path / "run")
    assert len(files.held_locks() - before) == 2


def test_a_folder_that_cannot_be_opened_goes_unlocked(monkeypatch, tmp_path, no_locks_left):
    """Windows' os.open refuses folders (PermissionError)."""
    real_open, out, run_dir = os.open, tmp_path / "out", tmp_path / "run"

    def refuse_folders(path, flags, *args, **kwargs):
        if path in (out, run_dir):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_folders)
    before = files.held_locks()
    assert separate_into(out).is_file()
    prepare_run(run_dir)
    assert files.held_locks() == before


@pytest.mark.parametrize("missing", ["/proc/locks", "os.major"])
def test_without_proc_locks_the_holder_is_unknown(missing, monkeypatch, tmp_path, no_locks_left, locked_elsewhere):
    """macOS and Windows have no /proc; Windows' os has no major()."""
    if missing == "os.major":
        monkeypatch.delattr(os, "major")
    else:
        monkeypatch.setattr(files, "PROC_LOCKS", tmp_path / "no-proc" / "locks")
    out = tmp_path / "out"
    out.mkdir()
    with locked_elsewhere(out):
        assert files.lock_holder(out) is None
        with pytest.raises(UserError, match="in use by another process \\(pid unknown\\)"):
            files.lock_folder(out)


def test_run_cli_releases_the_locks_its_command_took(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = files.held_locks()
    assert cli.run_cli(lambda argv: files.lock_folder(out)) == 0
    assert files.held_locks() == before


# ---------------------------------------------------------------------------- the quiet TensorFlow import


@pytest.fixture()
def fake_tensorflow(monkeypatch, tmp_path):
    """A ``tensorflow`` that prints a start-up line on file descriptor 2 while it loads, found
    before the real one; the import state is restored after the test."""
    package = tmp_path / "fake" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import os\nos.write(2, b'start-up log\\n')\nFAKE = True\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, cli._QuietImport)])
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")


def fail(*args, **kwargs):
    raise OSError(errno.EBADF, "Bad file descriptor")


@pytest.mark.parametrize("missing", [None, "os.dup", "os.dup2", "tempfile", "sys.stderr"])
def test_the_quiet_import_never_stops_tensorflows_import(missing, fake_tensorflow, monkeypatch, capfd):
    """Where file descriptor 2 cannot be redirected (none, as under pythonw; no temporary file)
    the log shows, and the import succeeds."""
    cli.quiet_tensorflow()
    with monkeypatch.context() as m:
        if missing in ("os.dup", "os.dup2"):
            m.setattr(os, missing[3:], fail)
        elif missing == "tempfile":
            m.setattr(cli.tempfile, "TemporaryFile", fail)
        elif missing == "sys.stderr":
            m.setattr(sys, "stderr", None)
            m.setattr(os, "dup", fail)
        import tensorflow
    assert tensorflow.FAKE
    err = capfd.readouterr().err
    assert err == ("" if missing is None else "start-up log\n")


# ---------------------------------------------------------------------------- no /proc/cpuinfo


def test_without_proc_cpuinfo_bfloat16_is_not_chosen(monkeypatch):
    from separation import unet_fast

    def no_proc(path, *args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    monkeypatch.setattr(unet_fast, "open", no_proc, raising=False)
    assert unet_fast.bfloat16_is_fast() is False


def test_the_benchmarks_measure_without_proc_resource_or_load_average(monkeypatch, tmp_path):
    """Windows has no /proc/cpuinfo, no os.getloadavg and no resource module."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import benchlib

    monkeypatch.setattr(benchlib, "CPUINFO", tmp_path / "no-proc" / "cpuinfo")
    assert f"{os.cpu_count()} logical CPUs" in benchlib.cpu_summary()
    monkeypatch.delattr(os, "getloadavg")
    assert np.isnan(benchlib.load_average())
    hidden = tmp_path / "no-resource"
    hidden.mkdir()
    (hidden / "resource.py").write_text("raise ImportError('no resource module here')\n")
    measured = benchlib.run_measured([sys.executable, "-c", "print(42)"], env={"PYTHONPATH": str(hidden)})
    assert measured["stdout"] == "42\n" and measured["wall"] > 0
    assert np.isnan(measured["cpu"]) and np.isnan(measured["rss_mb"])
