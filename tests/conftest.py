"""Shared fixtures. The project is installed (editable, by requirements.txt), so tests import its
scripts and packages as any user code does."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parent.parent

import pytest  # noqa: E402

MIR1K = Path(os.environ.get("MIR1K_ROOT", ROOT.parent / "shared" / "data" / "mir1k"))


@pytest.fixture(scope="session")
def mir1k_root() -> Path:
    """The shared MIR-1K copy (../shared/data/mir1k beside the checkout, or $MIR1K_ROOT)."""
    if not (MIR1K / "Wavfile").is_dir():
        pytest.skip(f"MIR-1K not found at {MIR1K} (set MIR1K_ROOT)")
    return MIR1K


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A whole pipeline run in miniature: 2 training songs and 1 test song of 8 s, a tiny U-Net
    trained for 2 epochs of 2 steps, the test song separated and evaluated with the baselines."""
    import pipeline

    work = tmp_path_factory.mktemp("pipeline")
    assert pipeline.main(TINY_PIPELINE + ["--work", str(work)]) == 0
    return work


TINY_PIPELINE = ["--train-songs", "2", "--test-songs", "1", "--seconds", "8", "--epochs", "2",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--filters", "4,8,8,8,8,8", "--jobs", "1"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A run-like folder holding a tiny untrained U-Net (best.keras) and its audio_params.json."""
    import unet_model
    from separation.audio import DEFAULT_PARAMS

    folder = tmp_path_factory.mktemp("tiny_model")
    unet_model.build_unet(filters=(2, 4, 4, 4, 4, 4)).save(folder / "best.keras")
    DEFAULT_PARAMS.save(folder / "audio_params.json")
    return folder


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
