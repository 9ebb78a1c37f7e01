"""What the benchmark scripts share: the table format, the machine's description, test songs,
models and child-process measurements. Each script prints one markdown table (RESULTS.md
collects them); the machine's CPU may be shared, so compare rows of one run, not runs.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
#: Linux's description of the CPUs (other platforms have none: the summary says less there).
CPUINFO = Path("/proc/cpuinfo")

import numpy as np  # noqa: E402


def markdown_table(header: list[str], rows: list[list], digits: int = 3) -> str:
    """A GitHub-markdown table: the first column left-aligned, the others right-aligned; floats
    with ``digits`` decimals."""
    cells = [list(header)] + [[f"{c:.{digits}f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"]
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     + " |")
    return "\n".join(lines)


def print_table(title: str, notes: str, header: list[str], rows: list[list], digits: int = 3) -> None:
    """The script's result: a heading, a line of conditions, the table."""
    print(f"\n## {title}\n\n{notes}\n\n{markdown_table(header, rows, digits)}", flush=True)


def cpu_summary() -> str:
    """The CPU model, its logical CPUs and its bfloat16 extensions, from /proc/cpuinfo (Linux)."""
    try:
        info = CPUINFO.read_text()
    except OSError:
        return f"{platform.processor() or 'unknown CPU'}, {os.cpu_count()} logical CPUs"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    extensions = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(extensions) or 'no AVX-512'}"


def load_average() -> float:
    """The 1-minute load average (how many processes competed for the CPUs); NaN where the
    platform keeps none (Windows)."""
    if not hasattr(os, "getloadavg"):
        return float("nan")
    return os.getloadavg()[0]


def synthetic_song(seconds: float, sr: int = 44100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic song's ``(vocals, accompaniment)``, each ``(samples, 2)`` float32 at ``sr``."""
    from separation import synth

    vocals, accompaniment, _ = synth.synthesize_track(seed, seconds=seconds, sr=sr)
    return vocals, accompaniment


def model_or_untrained(model_path: str | None, folder: Path):
    """``(model, params, path)``: the given ``.keras`` model, or an untrained full-size U-Net saved
    as ``folder/best.keras`` with the default audio parameters (speed does not depend on weights)."""
    import unet_model
    from separation.audio import DEFAULT_PARAMS

    if model_path:
        model, params = unet_model.load_model(model_path)
        return model, params, Path(model_path)
    model = unet_model.build_unet()
    model.save(folder / "best.keras")
    DEFAULT_PARAMS.save(folder / unet_model.PARAMS_FILE)
    return model, DEFAULT_PARAMS, folder / "best.keras"


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-distortion ratio in dB over the whole signal (no allowed distortion filter)."""
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-20)))


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` in a fresh child: ``{"wall", "cpu", "rss_mb", "stdout"}`` (wall seconds, CPU
    seconds user + system, peak resident MB; CPU and memory are NaN where Python has no
    ``resource`` module: Windows). A wrapper process runs it so that the child resource usage
    covers this command alone; a failure raises with its stderr."""
    wrapper = ("import subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True); "
               "w = time.perf_counter() - t; sys.stderr.write(r.stderr[-3000:]); sys.stdout.write(r.stdout)\n"
               "try:\n    import resource\nexcept ImportError:\n    cpu = rss = float('nan')\n"
               "else:\n    u = resource.getrusage(resource.RUSAGE_CHILDREN); cpu = u.ru_utime + u.ru_stime\n"
               "    rss = u.ru_maxrss / (2**20 if sys.platform == 'darwin' else 1024)  # bytes on macOS, kB on Linux\n"
               "print('\\nMEASURED', w, cpu, rss, r.returncode)")
    proc = subprocess.run([sys.executable, "-c", wrapper] + cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    body, _, last = proc.stdout.rpartition("\nMEASURED ")
    if not last:
        raise RuntimeError(f"{' '.join(cmd)}: no measurement ({proc.stderr[-2000:]})")
    wall, cpu, rss, code = last.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {proc.stderr[-2000:]}")
    return {"wall": float(wall), "cpu": float(cpu), "rss_mb": float(rss), "stdout": body}


class Sampled:
    """A step timed in samples of repeated calls; keeps the best time per call.

    :meth:`warm_up` makes the first calls (tracing, allocation), then sets enough calls per
    sample to last ``sample_s``, so that a fast step (a matrix product) is not timed over a
    shorter, luckier window of a shared CPU than a slow one. Subclasses define ``step()``.
    """

    best = float("inf")
    repeats = 1

    def step(self):
        raise NotImplementedError

    def warm_up(self, sample_s: float) -> None:
        self.step()
        start = time.perf_counter()
        self.step()
        self.repeats = max(1, round(sample_s / (time.perf_counter() - start)))

    def time(self) -> None:
        start = time.perf_counter()
        for _ in range(self.repeats):
            self.step()
        self.best = min(self.best, (time.perf_counter() - start) / self.repeats)
