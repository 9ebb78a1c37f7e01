"""Every script's --help is instant: heavy libraries are imported inside the functions that
need them (README, "Project layout"), never when a script starts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("*.py"), *ROOT.glob("pytorch_twin/*.py"), *ROOT.glob("benchmarks/*.py")]
                 if 'if __name__ == "__main__":' in p.read_text())
HEAVY = ("keras", "tensorflow", "torch", "matplotlib", "jax", "librosa", "numba")

#: Runs a script's --help in a fresh interpreter; reports the CPU seconds and what got imported (a None
#: entry is a module a script hides from imports, not one it imported).
HELP = """
import json, resource, runpy, sys
sys.argv = [sys.argv[1], "--help"]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else ".")
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    code = exit.code
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "cpu": usage.ru_utime + usage.ru_stime, "modules": sorted(m for m, module in sys.modules.items() if module is not None)}))
"""


def test_the_scripts_are_found():
    assert {"inference.py", "train.py", "data_generator.py", "evaluate.py", "pytorch_twin/train_torch.py",
            "pytorch_twin/compare_frameworks.py", "benchmarks/bench_inference.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_instant_and_imports_no_heavy_library(script):
    proc = subprocess.run([sys.executable, "-c", HELP, script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and "usage:" in proc.stdout
    assert "--verbose" in proc.stdout  # cli.ArgumentParser's: TensorFlow's start-up log is hidden without it
    assert not [m for m in result["modules"] if m.split(".")[0] in HEAVY]
    # CPU time of the whole process, interpreter start included (wall time would measure the machine's load)
    assert result["cpu"] < 1.0, result["cpu"]
