"""The notebooks run end to end on a tiny pipeline run, and are committed without outputs.

Each notebook is executed by nbclient in a fresh kernel started from this interpreter, with the
working folder notebooks/ (as when a user opens it there) and its inputs given by the
environment variables of its parameters cell, pointing at a pipeline run of a few seconds.
The kernel is the "python3" kernel of this environment: jupyter_client starts it with
``sys.executable`` (the spec's "python" is replaced by it, and without any spec ipykernel's own
is used), so no kernel needs to be installed.
"""

import importlib.util
import math
import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DEMO = "01_separation_demo.ipynb"
RESULTS = "02_training_and_evaluation.ipynb"
FRAMEWORKS = "03_tensorflow_vs_pytorch.ipynb"
TORCH_MISSING = "PyTorch is needed for this (an optional dependency): pip install torch"


class Executed:
    """A notebook after execution: its text outputs (streams and plain text), HTML and images."""

    def __init__(self, nb):
        self.nb = nb
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        self.errors = [o for o in outputs if o.output_type == "error"]
        self.text = "".join(o.text if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
                            for o in outputs)
        self.html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
        self.images = [o for o in outputs if "image/png" in o.get("data", {})]

    def number(self, pattern: str) -> float:
        """The number captured by ``pattern``'s group in the text outputs (fails when absent)."""
        found = re.search(pattern, self.text)
        assert found, f"{pattern!r} not in the notebook's output:\n{self.text}"
        return float(found.group(1))

    def row(self, first: str) -> list[float]:
        """The numbers of the first printed table row that starts with ``first`` (then only numbers)."""
        for line in self.text.splitlines():
            cells = line.split()
            if cells[:1] == [first] and len(cells) > 1 and all(re.fullmatch(r"-?[\d.]+(e-?\d+)?|nan", c) for c in cells[1:]):
                return [float(c) for c in cells[1:]]
        raise AssertionError(f"no table row {first!r} in the notebook's output:\n{self.text}")


def execute(name: str, timeout: int = 300, **env: str) -> Executed:
    """Run a committed notebook in a fresh kernel from notebooks/ with ``env`` added to the environment
    (each cell within ``timeout`` seconds)."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    environment.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures as outputs
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=environment)  # raises CellExecutionError, with the traceback, if a cell fails
    executed = Executed(nb)
    assert not executed.errors
    return executed


@pytest.mark.parametrize("name", [DEMO, RESULTS, FRAMEWORKS])
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code), \
        f"{name}: clear the outputs before committing (Kernel > Restart & Clear Output)"
    assert "parameters" in code[0].metadata.get("tags", []), f"{name}: the first code cell is the parameters cell"
    assert nb.metadata.kernelspec.name == "python3"


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [DEMO, RESULTS, FRAMEWORKS]


@pytest.mark.slow
def test_separation_demo(tiny_pipeline):
    # The model as a run folder and the song relative to the repository root, not to notebooks/
    song = tiny_pipeline / "data" / "builtin" / "test" / "test000"
    run = execute(DEMO, UNET_MODEL=str(tiny_pipeline / "runs" / "builtin"), UNET_SONG_DIR=os.path.relpath(song, ROOT))
    assert "song: test000, 4.0 s at 44100 Hz, 2 channel(s)" in run.text
    assert "vocals + accompaniment == mixture: True" in run.text
    assert len(run.images) == 2  # the mask figure and the spectrograms
    assert sum("<audio" in html for html in run.html) == 4
    header = "method " + " ".join(f"{s} {m}" for s in ("voc", "acc") for m in ("NSDR", "SDR", "SIR", "SAR"))
    assert header in re.sub(r" +", " ", run.text)
    unet, mixture, irm = (run.row(name) for name in ("U-Net", "mixture", "irm"))
    assert len(unet) == 8 and all(math.isfinite(v) for v in unet + irm)
    assert mixture[0] == 0.0 and mixture[4] == 0.0  # the NSDR of the mixture itself
    assert irm[0] > 3.0  # the oracle mask separates


@pytest.mark.slow
def test_training_and_evaluation(tiny_pipeline):
    from separation import runs

    run_dir = tiny_pipeline / "runs" / "builtin"
    run = execute(RESULTS, UNET_RUN_DIR=str(run_dir), UNET_RESULTS=str(tiny_pipeline / "results" / "builtin"))
    history = runs.read_history(run_dir / "history.csv")
    best = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    assert f"best.keras holds epoch {best + 1} (val_loss" in run.text
    assert "1 tracks; methods: unet, mixture, irm, ibm, hpss, nmf" in run.text
    assert len(run.images) == 2  # the training curves and the box plots
    assert "GNSDR" in run.text and "voc SDR" in run.text  # the v3 and v4 headline tables
    assert len(run.row("unet")) == 6 and math.isfinite(run.row("unet")[0])  # GNSDR, GSIR, GSAR x 2
    assert run.row("mixture")[0] == 0.0


def check_torch_missing(run: Executed):
    assert TORCH_MISSING in run.text and "restart the kernel" in run.text
    assert not run.images


@pytest.mark.slow
def test_tensorflow_vs_pytorch(tiny_pipeline, request):
    torch_installed = importlib.util.find_spec("torch") is not None
    compare = {}
    if torch_installed:
        # section 4 is given the comparison conftest.tiny_comparison ran (the three trainings of 3 epochs,
        # scored on the test song): the same command finds them done and prints their table again
        comparison = request.getfixturevalue("tiny_comparison")
        compare = dict(UNET_CACHE=str(comparison.options[2]), UNET_COMPARE_DIR=str(comparison.run),
                       UNET_COMPARE_OPTIONS=" ".join(comparison.recipe))
    run = execute(FRAMEWORKS, timeout=900, UNET_MODEL=str(tiny_pipeline / "runs" / "builtin" / "best.keras"),
                  UNET_SONG_DIR=str(tiny_pipeline / "data" / "builtin" / "test" / "test000"), **compare)
    if not torch_installed:
        check_torch_missing(run)
        return
    assert "Keras padding: torch" in run.text
    assert run.number(r"largest mask difference on 2 random patches: (\S+)") < 1e-5
    assert run.number(r"overall: mask (\S+),") < 1e-5
    assert run.number(r"overall: mask \S+, vocals (\S+)") < 1e-5
    assert run.row("keras") == run.row("torch")  # the same scores (GNSDR table, 2 decimals)
    assert "Patches per second" in run.text
    # section 4: the table of the three trainings (scored on the test song) and their curves
    for label in ("Keras/TensorFlow", "Keras/PyTorch", "PyTorch twin"):
        cells = next(line for line in run.text.splitlines() if line.startswith(label + " "))[len(label):].split()
        assert int(cells[2]) == comparison.epochs and all(math.isfinite(float(c)) for c in cells[:-2]), cells
        assert cells[-2:] == ["refined", "4096"], cells  # how the test song was separated
    assert len(run.images) == 2


@pytest.mark.slow
def test_tensorflow_vs_pytorch_without_torch(tmp_path):
    """Where PyTorch is not installed the notebook says how to install it and runs to the end."""
    hidden = tmp_path / "torch"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'torch' (hidden by the test)\")\n")
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    run = execute(FRAMEWORKS, PYTHONPATH=pythonpath, UNET_MODEL=str(tmp_path / "missing.keras"))
    check_torch_missing(run)
    assert "Keras padding" not in run.text
