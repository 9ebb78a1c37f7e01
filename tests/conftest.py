"""Shared fixtures, each built once per test run where it is pure (a test that changes one works on
a copy: helpers.copy_of). The project is installed (editable, by requirements.txt), so tests
import its scripts and packages as any user code does; the helpers they share are in helpers.py."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# In one of several test processes, TensorFlow, PyTorch and OpenMP share out the CPUs instead of each
# starting a thread per CPU (tiny models gain nothing from more threads, and the processes' threads
# would only wait for one another); the trainings that tests start inherit it. Set before NumPy's import
# starts its BLAS threads. docs/design.md, Tests.
_processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _processes > 1:
    for _name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(_name, str(max(1, usable_cpus() // _processes)))

import pytest  # noqa: E402

from helpers import (ROOT, SR, TINY_PIPELINE, history, noise, tiny_args, voice_and_band, write_songs,  # noqa: E402
                     write_track)

MIR1K = Path(os.environ.get("MIR1K_ROOT", ROOT.parent / "shared" / "data" / "mir1k"))


#: Most test processes that ``-n auto`` starts (pytest.ini): each imports TensorFlow (about 1 GB).
MAX_TEST_PROCESSES = 4


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: harmless where xdist is absent or disabled
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one test process more than the usable CPUs (a test often waits for a process it
    started, and another process then has the CPU), at most MAX_TEST_PROCESSES."""
    return max(1, min(usable_cpus() + 1, MAX_TEST_PROCESSES))


#: Test files that share a costly session fixture (``tiny_comparison``: three trainings; ``tiny_pipeline``), run in
#: one process so that it is made once; every other file is a process's unit of work on its own.
SAME_PROCESS = {"test_compare_training": "pipelines", "test_notebooks": "pipelines", "test_pipeline": "pipelines"}
#: The groups that take longest (35 to 90 s of CPU each, measured: docs/design.md), handed
#: out first so that none of them starts last and runs on alone (pytest.ini: --no-loadscope-reorder).
LONGEST_FIRST = ("pipelines", "test_train", "test_ablation", "test_distributed")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """``--dist loadgroup`` (pytest.ini): each test's group is its file, or its files' shared group; the
    longest groups come first."""
    def group(item):
        return SAME_PROCESS.get(item.path.stem, item.path.stem)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group(item), len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def mir1k_root() -> Path:
    """The shared MIR-1K copy (../shared/data/mir1k beside the checkout, or $MIR1K_ROOT)."""
    if not (MIR1K / "Wavfile").is_dir():
        pytest.skip(f"MIR-1K not found at {MIR1K} (set MIR1K_ROOT)")
    return MIR1K


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A run-like folder holding a tiny untrained two-level U-Net (best.keras: quick to load and run)
    and its audio_params.json (the default 512 x 128 patches)."""
    import unet_model
    from separation.audio import DEFAULT_PARAMS

    folder = tmp_path_factory.mktemp("tiny_model")
    unet_model.build_unet(filters=(2, 4)).save(folder / "best.keras")
    DEFAULT_PARAMS.save(folder / "audio_params.json")
    return folder


@pytest.fixture(scope="session")
def tiny_songs(tmp_path_factory) -> Path:
    """Four 8-s training songs and one 3-s test song a U-Net can learn from (helpers.write_songs):
    <root>/train/song0..3 and <root>/test/test0."""
    root = tmp_path_factory.mktemp("songs")
    write_songs(root)
    write_songs(root, n_tracks=1, seconds=3.0, seed=5, split="test", prefix="test")
    return root


@pytest.fixture(scope="session")
def tiny_cache(tiny_songs, tmp_path_factory) -> Path:
    """The training split of ``tiny_songs`` prepared with helpers.TINY_PARAMS (64 x 64 patches)."""
    from helpers import TINY_PARAMS
    from separation.cache import prepare

    path = tmp_path_factory.mktemp("caches") / "tiny"
    prepare("stems", tiny_songs, path, split="train", params=TINY_PARAMS, progress=False)
    return path


@pytest.fixture(scope="session")
def trained_run(tiny_cache, tmp_path_factory) -> types.SimpleNamespace:
    """A tiny run trained for 3 epochs of 10 steps (helpers.tiny_args), in two sessions: a time
    limit stops the first after epoch 1, the same command without it trains on.

    ``run`` is its folder (copy it to change it: helpers.copy_of), ``outputs`` the two sessions'
    printed text."""
    import train

    run = tmp_path_factory.mktemp("trained") / "run"
    outputs = []
    for extra in (["--max-minutes", "0.0001"], []):
        with _captured_output() as out:
            assert train.main(tiny_args(tiny_cache, run, 3, 10, *extra)) == 0
        outputs.append(out.text)
    return types.SimpleNamespace(run=run, outputs=outputs)


@contextlib.contextmanager
def _captured_output():
    """What this process and its children print inside the block: ``.text``, once it has ended."""
    import io
    import tempfile

    result = types.SimpleNamespace(text="")
    buffer = io.StringIO()
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile("w+") as children:
        os.dup2(children.fileno(), 1)
        try:
            with contextlib.redirect_stdout(buffer):
                yield result
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            children.seek(0)
            result.text = buffer.getvalue() + children.read()


@pytest.fixture(scope="session")
def two_songs(tmp_path_factory) -> Path:
    """References to score: <root>/test/{song_a,song_b}/{mixture,vocals,accompaniment}.wav, 2 s at
    8192 Hz, mono (helpers.voice_and_band)."""
    root = tmp_path_factory.mktemp("stems")
    for seed, name in enumerate(("song_a", "song_b")):
        write_track(root / "test" / name, *voice_and_band(2.0, seed))
    return root


@pytest.fixture()
def noise_songs(tmp_path) -> Path:
    """Two 4-s reference tracks of noise, <root>/{song_a,song_b}/, made afresh for each test (some spoil them)."""
    from separation import audio

    root = tmp_path / "refs"
    for i, name in enumerate(["song_a", "song_b"]):
        voc, acc = noise(4.0, seed=2 * i), noise(4.0, seed=2 * i + 1)
        (root / name).mkdir(parents=True)
        for stem, x in (("vocals", voc), ("accompaniment", acc), ("mixture", voc + acc)):
            audio.save_audio(root / name / f"{stem}.wav", x, SR)
    return root


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A whole pipeline run in miniature (helpers.TINY_PIPELINE): its --work folder."""
    import pipeline

    work = tmp_path_factory.mktemp("pipeline")
    assert pipeline.main(TINY_PIPELINE + ["--work", str(work)]) == 0
    return work


@pytest.fixture(scope="session")
def tiny_comparison(tiny_cache, tmp_path_factory) -> types.SimpleNamespace:
    """``pytorch_twin/compare_frameworks.py train`` on ``tiny_cache`` (3 epochs of 1 step, no dropout, the
    test song scored), run as a user who stopped it would run it: killed (SIGKILL) once its second
    training had saved an epoch, then the same command again (in this process), which finished it.

    Returns ``run`` (its folder), ``options`` (the command's arguments), ``recipe`` (its options after
    --cache and --run-dir), ``epochs``, what the kill left: ``survivors`` (processes still naming
    ``run`` a second after the kill), ``done`` (the second training's saved epochs) and
    ``first_history`` (the first training's history), and the second command's ``status`` and
    printed ``out``. The same command may be run again in ``run`` (a copy elsewhere would not resume:
    the trainings' --init-from names this folder's init.keras); it finds the trainings done and
    prints the same table again."""
    pytest.importorskip("torch", reason="PyTorch not installed: `pip install torch==2.13.0` (CPU wheel) to compare "
                                        "the frameworks")
    from pytorch_twin import compare_frameworks

    run = tmp_path_factory.mktemp("comparison") / "compare"
    epochs = 3
    options = ["train", *tiny_args(tiny_cache, run, epochs, 1, "--dropout", "0"), "--test", "test", "--threads", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "pytorch_twin" / "compare_frameworks.py"), *options], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "keras-torch" / "backup" / "state.json"
    try:
        deadline = time.monotonic() + 600
        while not state.is_file():  # the second training saved its first epoch
            assert proc.poll() is None, "the comparison ended before its second training"
            assert time.monotonic() < deadline, "training too slow"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # the comparison only: its training dies with it
        proc.wait(timeout=30)
    finally:
        proc.kill()
    time.sleep(1)
    comparison = types.SimpleNamespace(
        run=run, options=options, recipe=options[5:], epochs=epochs, done=json.loads(state.read_text())["epoch"],
        survivors=[pid for pid in os.listdir("/proc") if pid.isdigit() and pid != str(os.getpid())
                   and str(run) in _command_line(pid)],
        first_history=history(run / "keras-tensorflow"))
    with _captured_output() as out:  # the trainings print from processes of their own: file descriptor 1 too
        comparison.status = compare_frameworks.main(options)
    comparison.out = out.text
    return comparison


def _command_line(pid: str) -> str:
    """The command line of process ``pid`` ("" once it has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


#: A second process taking a folder's flock, as separation.files.lock_folder takes it.
HOLD_LOCK = ("import fcntl, os, sys, time\n"
             "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
             "fcntl.flock(fd, fcntl.LOCK_EX)\n"
             "print('locked', flush=True)\n"
             "time.sleep(600)\n")


@pytest.fixture()
def locked_elsewhere():
    """``with locked_elsewhere(folder) as holder:``: another process (``holder``, a Popen) holds
    ``folder``'s lock for the block, and is killed after it (its lock goes with it)."""
    @contextlib.contextmanager
    def hold(folder: Path):
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "locked"
            yield proc
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()

    return hold
