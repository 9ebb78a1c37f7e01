"""Faults a hostile corpus found (issue 17): huge headers, pipes, odd names, failing tracks in a
batch, full disks, signals, leftovers and concurrent runs.

Each test makes the fault for real where a test can (a sparse 4 GB file, a FIFO, a small tmpfs
in a private mount namespace, a real SIGTERM, a second process holding a lock) and checks the
promised behaviour: one line naming the file and the fix, the documented exit status, no
traceback, no partial or temporary file left.
"""

import contextlib
import errno
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separation import audio, cli, stems
import evaluate
import inference
import train
from helpers import ROOT, SR, assert_one_line_error, files_under, noise, tiny_args, wav_bytes


def song(folder: Path, name: str = "song.wav", seconds: float = 2.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(wav_bytes(noise(seconds), SR))
    return path


def separate(*argv) -> int:
    return cli.run_cli(inference.main, [str(a) for a in argv])


# ---------------------------------------------------------------------------- memory and time


def wav_header(frames: int, sr: int, channels: int) -> bytes:
    """A 16-bit PCM WAV header announcing ``frames`` frames (the samples need not follow)."""
    data = frames * channels * 2
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * channels * 2, channels * 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data)


@pytest.fixture()
def no_reading(monkeypatch):
    """Fail the test if inference reads a song's samples (the refusal must come from its header)."""
    def read(path, *args, **kwargs):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(audio, "load_audio", read)


def test_a_huge_sample_rate_in_a_header_is_refused_before_reading(no_reading, tiny_model_dir, tmp_path, capsys):
    """2^31 - 1 Hz and 3000 samples: one full-band STFT window alone would take gigabytes."""
    path = tmp_path / "absurd.wav"
    path.write_bytes(wav_header(3000, 2**31 - 1, 1) + bytes(6000))
    status = separate(path, "-o", tmp_path / "out", "--model", tiny_model_dir)
    err = capsys.readouterr().err
    assert status == 1
    assert_one_line_error(err, "absurd.wav", "2147483647 Hz", "--max-memory")
    assert files_under(tmp_path / "out") == []


def six_hours(folder):
    """A 6.5-hour 44.1 kHz stereo WAV of 4.1 GB, sparse (no disk space): only its header is real."""
    frames = int(6.5 * 3600 * 44100)
    path = folder / "six hours.wav"
    with open(path, "wb") as f:
        f.write(wav_header(frames, 44100, 2))
        f.truncate(44 + frames * 4)
    assert sf.info(str(path)).frames == frames
    return path


def test_a_four_gigabyte_song_is_refused_before_reading_unless_the_limit_is_raised(no_reading, tiny_model_dir, tmp_path,
                                                                                   capsys):
    """6.5 hours of 44.1 kHz stereo, a 4.1 GB WAV (sparse: it takes no disk space)."""
    path = six_hours(tmp_path)
    status = separate(path, "-o", tmp_path / "out", "--model", tiny_model_dir)
    err = capsys.readouterr().err
    assert status == 1
    assert_one_line_error(err, "six hours.wav", "390.0 minutes", "GiB", "--max-memory")
    needed = float(err.split("need about ")[1].split(" GiB")[0])
    assert 10 < needed < 30  # two float32 copies of 2 x 1.03 G samples, and more
    # with the limit raised, the song gets past the check (and is read: the fixture stops it there)
    with pytest.raises(AssertionError, match="was read"):
        separate(path, "-o", tmp_path / "out", "--model", tiny_model_dir, "--max-memory", str(needed + 1))


def test_only_the_part_that_start_and_duration_read_counts_against_max_memory(no_reading, tiny_model_dir, tmp_path,
                                                                               capsys):
    """The same 6.5-hour file: a minute of it, or its last minute, passes the check (and is read)."""
    path = six_hours(tmp_path)
    for part in (["--start", "60", "--duration", "60"], ["--start", str(6.5 * 3600 - 60)]):
        with pytest.raises(AssertionError, match="was read"):
            separate(path, "-o", tmp_path / "out", "--model", tiny_model_dir, *part)
    status = separate(path, "-o", tmp_path / "out", "--model", tiny_model_dir, "--start", "60")  # 6.48 hours left
    assert status == 1
    assert_one_line_error(capsys.readouterr().err, "six hours.wav", "389.0 minutes", "--max-memory")


def test_memory_needed_grows_with_the_song_and_its_rate(tiny_model_dir):
    separator = inference.Separator(tiny_model_dir)
    minute = stems.memory_needed(60 * 44100, 2, 44100, separator)
    hour = stems.memory_needed(3600 * 44100, 2, 44100, separator)
    assert stems.BASE_MEMORY < minute < hour < stems.DEFAULT_MAX_MEMORY * 2**30
    # 3000 samples at 2^31 - 1 Hz in place of 48 kHz: the window, not the samples, decides
    absurd, usual = (stems.memory_needed(3000, 1, sr, separator) - stems.BASE_MEMORY for sr in (2**31 - 1, 48000))
    assert absurd > 100 * usual


def test_a_named_pipe_is_refused_by_name_without_waiting_for_a_writer(tiny_model_dir, tmp_path, capsys):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)

    def unblock():  # on a reader that opened the pipe anyway, let it see an end of file
        with contextlib.suppress(OSError), open(fifo, "wb"):
            pass

    timer = threading.Timer(20, unblock)
    timer.start()
    try:
        status = separate(fifo, "-o", tmp_path / "out", "--model", tiny_model_dir)
    finally:
        timer.cancel()
    assert status == 1
    assert_one_line_error(capsys.readouterr().err, "pipe.wav", "not a regular file")


def test_a_device_file_is_refused_by_name(tiny_model_dir, tmp_path, capsys):
    assert separate("/dev/zero", "-o", tmp_path / "out", "--model", tiny_model_dir) == 1
    assert_one_line_error(capsys.readouterr().err, "/dev/zero", "not a regular file")
    with pytest.raises(audio.AudioError, match="not a regular file"):
        audio.load_audio("/dev/zero")


# ---------------------------------------------------------------------------- names


def test_a_255_byte_file_name_is_separated(tiny_model_dir, tmp_path, capsys):
    long = song(tmp_path / "in", "a" * 251 + ".wav")
    out = tmp_path / "out"
    assert separate(long, "-o", out, "--model", tiny_model_dir) == 0
    assert files_under(out) == [f"{'a' * 251}/accompaniment.wav", f"{'a' * 251}/vocals.wav"]


def test_a_name_that_is_not_utf8_is_separated_under_a_readable_name_and_said(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    good = song(folder)
    raw = os.path.join(os.fsencode(folder), b"chanson \xe9t\xe9.wav")  # Latin-1, not UTF-8
    os.rename(good, raw)
    out = tmp_path / "out"
    assert separate(os.fsdecode(raw), "-o", out, "--model", tiny_model_dir) == 0
    captured = capsys.readouterr()
    assert "not valid UTF-8" in captured.err and "Traceback" not in captured.err
    assert files_under(out) == ["chanson \ufffdt\ufffd/accompaniment.wav", "chanson \ufffdt\ufffd/vocals.wav"]


@pytest.mark.parametrize("output", ["same", "parent"])
def test_an_output_folder_that_is_or_holds_an_input_folder_is_refused(output, tiny_model_dir, tmp_path, capsys):
    inputs = tmp_path / "songs"
    song(inputs)
    out = inputs if output == "same" else tmp_path
    assert separate(inputs, "-o", out, "--model", tiny_model_dir) == 2
    assert_one_line_error(capsys.readouterr().err, f"-o {out}", "input folder", "choose another output folder")
    assert files_under(inputs) == ["song.wav"]


# ---------------------------------------------------------------------------- evaluate: batches keep going


def spoil_reference(kind: str, root: Path, estimates: Path) -> None:
    b = root / "song_b"
    if kind == "truncated reference":
        (b / "vocals.wav").write_bytes((b / "vocals.wav").read_bytes()[:40])
    elif kind == "stems of 2 and 3 channels":
        audio.save_audio(b / "vocals.wav", noise(4.0, channels=2), SR)
        audio.save_audio(b / "accompaniment.wav", noise(4.0, channels=3), SR)
    else:  # an estimate with other channels than its mono reference, under --stereo
        audio.save_audio(estimates / "song_b" / "vocals.wav", noise(4.0, channels=2), SR)


@pytest.mark.parametrize("kind", ["truncated reference", "stems of 2 and 3 channels", "stereo estimate, mono reference"])
@pytest.mark.slow
def test_evaluate_lists_a_track_that_fails_and_scores_the_others(kind, noise_songs, tmp_path, capsys):
    estimates = tmp_path / "est"
    for track in noise_songs.iterdir():
        shutil.copytree(track, estimates / track.name)
    spoil_reference(kind, noise_songs, estimates)
    out = tmp_path / "results"
    status = cli.run_cli(evaluate.main, ["--references", str(noise_songs), "--estimates", str(estimates),
                                         "--out", str(out), "--metrics", "v3", "--stereo", "--no-plots", "--quiet"])
    captured = capsys.readouterr()
    assert status == 1 and "Traceback" not in captured.err
    rows = {r["track"]: r for r in evaluate.read_csv(out / "per_track.csv")}
    assert rows["song_a"]["status"] == "ok" and rows["song_a"]["v3_vocals_SDR"] > 60
    assert rows["song_b"]["status"].startswith("failed: ")
    assert np.isnan(rows["song_b"]["v3_vocals_SDR"])
    assert any("song_b" in line and rows["song_b"]["status"] in line for line in captured.err.splitlines())


# ---------------------------------------------------------------------------- full disks


def can_mount_tmpfs() -> bool:
    """Whether this machine lets an ordinary process mount a tmpfs in its own namespaces."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k none /tmp"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="no unprivileged tmpfs here (user namespaces off); "
                                                  "test_a_simulated_full_disk_* cover the same path")
@pytest.mark.slow
def test_a_full_disk_during_inference_is_one_line_and_leaves_nothing(tiny_model_dir, tmp_path):
    """A real full disk: a 256 kB tmpfs as the output folder (a private mount namespace, no root)."""
    first, second = song(tmp_path / "in", "first.wav", 10.0), song(tmp_path / "in", "second.wav", 10.0)
    out = tmp_path / "out"
    out.mkdir()
    code = ("import os, sys, inference\nfrom separation import cli\n"
            "status = cli.run_cli(inference.main, sys.argv[2:])\n"
            "print('LEFT', sorted(str(p.relative_to(sys.argv[1])) for p in __import__('pathlib').Path(sys.argv[1]).rglob('*')))\n"
            "sys.exit(status)\n")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           'mount -t tmpfs -o size=256k none "$1" && shift && exec "$@"', "sh", str(out),
                           sys.executable, "-c", code, str(out), str(first), str(second), "-o", str(out),
                           "--model", str(tiny_model_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for name in ("first", "second"):  # which stem no longer fits depends on the file system's blocks
        assert re.search(f"^error: no space left on {out} while writing {out}/{name}/(vocals|accompaniment).wav; ",
                         proc.stderr, re.M), proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LEFT []"  # no stem, no temporary folder


def test_a_simulated_full_disk_during_inference_is_one_line_and_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch,
                                                                               capsys):
    """libsndfile's own report of a full disk (checked on a real tmpfs: a bare "system error",
    code 2), with the space left faked to zero."""
    path = song(tmp_path / "in")
    real_write = sf.write

    def write_half_then_fail(file, data, *args, **kwargs):
        real_write(file, data[: len(data) // 2], *args, **kwargs)
        raise sf.LibsndfileError(2)

    monkeypatch.setattr(sf, "write", write_half_then_fail)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=10**9, free=0))
    out = tmp_path / "out"
    assert separate(path, "-o", out, "--model", tiny_model_dir) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, f"while writing {out}/song/vocals.wav", "no space left on /")
    assert files_under(out) == []


@pytest.mark.slow
def test_a_simulated_full_disk_during_evaluate_is_one_line_and_leaves_nothing(noise_songs, tmp_path, monkeypatch,
                                                                              capsys):
    """Python's own report of a full disk, ENOSPC, from the CSV writer after half the text."""
    real_write_text = Path.write_text

    def write_half_then_fail(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", write_half_then_fail)
    out = tmp_path / "results"
    status = cli.run_cli(evaluate.main, ["--references", str(noise_songs), "--baselines", "mixture", "--out", str(out),
                                         "--metrics", "v3", "--no-plots", "--quiet"])
    assert status == 2
    assert_one_line_error(capsys.readouterr().err, f"while writing {out}/per_track.csv", "no space left on /")
    assert files_under(out) == []


@pytest.mark.slow
def test_a_simulated_full_disk_while_saving_the_box_plots_is_one_line(noise_songs, tmp_path, monkeypatch, capsys):
    """The CSVs fit, then the disk fills while matplotlib writes the first box plot."""
    from matplotlib.figure import Figure

    def fail(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", fail)
    out = tmp_path / "results"
    status = cli.run_cli(evaluate.main, ["--references", str(noise_songs), "--baselines", "mixture", "--out", str(out),
                                         "--metrics", "v3", "--quiet"])
    assert status == 2
    assert_one_line_error(capsys.readouterr().err, f"while writing {out}/v3_", ".png", "no space left on /")
    assert not [name for name in files_under(out) if name.endswith(".png") or ".part" in name]


# ---------------------------------------------------------------------------- signals and leftovers


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_a_signal_while_writing_stems_removes_the_temporary_folder(sig, status, tiny_model_dir, tmp_path):
    """The process signals itself once the first stem is in its temporary folder."""
    out = tmp_path / "out"
    # Python leaves SIGINT ignored when it starts with it ignored (a background job of a
    # non-interactive shell, as CI may run it); a terminal's Ctrl-C reaches the default handler.
    code = ("import os, signal, sys, inference\nfrom separation import audio, cli\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "real = audio.save_audio\n"
            "def save_then_signal(*args, **kwargs):\n"
            "    real(*args, **kwargs)\n"
            f"    os.kill(os.getpid(), {int(sig)})\n"
            "audio.save_audio = save_then_signal\n"
            "sys.exit(cli.run_cli(inference.main, sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(song(tmp_path / "in")), "-o", str(out), "--model",
                           str(tiny_model_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert files_under(out) == [] and list(out.iterdir()) == []


def test_the_next_run_removes_what_a_killed_run_left(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    left = out / ".song.k7x2q9.part"  # write_stems' temporary folder, as SIGKILL leaves it
    left.mkdir(parents=True)
    (left / "vocals.wav").write_bytes(b"half a stem")
    (out / ".summary.txt.3jd8.part.txt").write_text("half")  # files.atomic_output's temporary file
    assert separate(song(tmp_path / "in", "other.wav"), "-o", out, "--model", tiny_model_dir) == 0
    assert sorted(p.name for p in out.iterdir()) == ["other"]


# ---------------------------------------------------------------------------- concurrent runs


def test_a_second_inference_into_the_same_folder_is_refused_until_the_first_dies(tiny_model_dir, tmp_path, capsys,
                                                                                  locked_elsewhere):
    out = tmp_path / "out"
    out.mkdir()
    path = song(tmp_path / "in")
    with locked_elsewhere(out) as holder:
        assert separate(path, "-o", out, "--model", tiny_model_dir) == 2
        assert_one_line_error(capsys.readouterr().err, str(out), f"pid {holder.pid}", "-o")
        assert list(out.iterdir()) == []
    # the holder was killed: its lock went with it, and the same command now runs
    assert separate(path, "-o", out, "--model", tiny_model_dir) == 0
    assert files_under(out) == ["song/accompaniment.wav", "song/vocals.wav"]


def test_a_second_training_in_the_same_run_folder_is_refused(tiny_cache, tmp_path, capsys, locked_elsewhere):
    run = tmp_path / "run"
    run.mkdir()
    with locked_elsewhere(run) as holder:
        assert cli.run_cli(train.main, tiny_args(tiny_cache, run, 1, 1)) == 2
        assert_one_line_error(capsys.readouterr().err, str(run), f"pid {holder.pid}", "--run-dir")
        assert list(run.iterdir()) == []
