"""Where a training step's time goes, by oneDNN primitive: Keras on TensorFlow against the PyTorch twin.

    .venv/bin/python benchmarks/profile_training_step.py [--batch 16] [--steps 3] [--threads 2]

Both frameworks run their convolutions through oneDNN on x86 CPUs (TensorFlow with its default
``TF_ENABLE_ONEDNN_OPTS=1``, PyTorch's ``mkldnn``), and oneDNN logs every primitive it runs with
its time when ``ONEDNN_VERBOSE=1``. Each configuration (framework x precision, as train.py and
train_torch.py run them) trains the full U-Net in a child process: two warm-up steps, then
``--steps`` logged steps. The table sums the logged milliseconds per step by primitive kind and
direction (convolution forward, backward data, backward weights; transposed convolutions are
"deconvolution" in oneDNN's words; reorders are layout or type conversions), next to the step's
wall time; what is not in oneDNN (TensorFlow's own kernels, Python, the optimizer in Eigen) is
the wall time minus the logged sum.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys

from benchlib import cpu_summary, print_table

from separation.cli import ArgumentParser, run_cli

#: One child's training: build, 2 warm-up steps, a marker line, then the logged steps and their wall time.
KERAS_CHILD = """
import sys, time
import numpy as np
import keras
import unet_model
batch, steps, precision = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model = unet_model.build_unet(precision=precision)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error", jit_compile="auto")
rng = np.random.default_rng(0)
x = rng.random((batch, 512, 128, 1), dtype=np.float32) ** 4
y = x * rng.random(x.shape, dtype=np.float32)
for _ in range(2):
    model.train_on_batch(x, y)
print("=== MEASURE", flush=True)
start = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
print(f"=== WALL {(time.perf_counter() - start) / steps}", flush=True)
"""
TORCH_CHILD = """
import sys, time
import numpy as np
import torch
from pytorch_twin import train_torch
from pytorch_twin.unet_torch import UNet
batch, steps, precision = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(int(sys.argv[4]))
bfloat16 = precision == "bfloat16"
model = UNet().train()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
rng = np.random.default_rng(0)
x = rng.random((batch, 512, 128, 1), dtype=np.float32) ** 4
mixture, vocals = train_torch.to_torch((x, x * rng.random(x.shape, dtype=np.float32)))
def step():
    optimizer.zero_grad()
    with train_torch.autocast(bfloat16):
        mask = model(mixture)
    loss = torch.nn.functional.mse_loss(mask.float() * mixture, vocals)
    loss.backward()
    optimizer.step()
for _ in range(2):
    step()
print("=== MEASURE", flush=True)
start = time.perf_counter()
for _ in range(steps):
    step()
print(f"=== WALL {(time.perf_counter() - start) / steps}", flush=True)
"""
CONFIGS = [("Keras on TensorFlow", KERAS_CHILD, "float32"), ("Keras on TensorFlow", KERAS_CHILD, "bfloat16"),
           ("PyTorch twin", TORCH_CHILD, "float32"), ("PyTorch twin", TORCH_CHILD, "bfloat16")]


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="patches per training step (default 16)")
    parser.add_argument("--steps", type=int, default=3, help="logged steps after 2 warm-up steps (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both frameworks (default 2)")
    parser.add_argument("--no-torch", action="store_true", help="Keras on TensorFlow only")
    return parser


def primitive_times(log: str, steps: int) -> tuple[dict[str, float], float]:
    """``({"kind, direction": ms per step}, wall seconds per step)`` from a child's output."""
    times: dict[str, float] = collections.defaultdict(float)
    measuring, wall = False, float("nan")
    for line in log.splitlines():
        if line.startswith("=== MEASURE"):
            measuring = True
        elif line.startswith("=== WALL"):
            wall = float(line.split()[-1])
        elif measuring and line.startswith("onednn_verbose") and ",exec," in line:
            fields = line.split(",")
            at = fields.index("exec")
            kind, implementation, direction = fields[at + 2], fields[at + 3], fields[at + 4]
            data_type = "bf16" if ":bf16" in line else "f32"
            name = f"{kind} {direction.replace('forward_training', 'forward')} ({data_type})"
            if kind == "reorder":
                name = f"reorder ({implementation.split(':')[0]})"
            times[name] += float(fields[-1]) / steps
    return dict(times), wall


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(args.threads),
               TF_NUM_INTRAOP_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS=str(args.threads))
    columns, results = [], {}
    for framework, code, precision in CONFIGS:
        if args.no_torch and framework.startswith("PyTorch"):
            continue
        label = f"{framework}, {precision}"
        proc = subprocess.run([sys.executable, "-c", code, str(args.batch), str(args.steps), precision,
                               str(args.threads)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{label} failed: {proc.stderr[-2000:]}")
        results[label] = primitive_times(proc.stdout, args.steps)
        columns.append(label)
    kinds = sorted({k for times, _ in results.values() for k in times},
                   key=lambda k: -max(results[c][0].get(k, 0.0) for c in columns))
    rows = [[kind] + [f"{results[c][0].get(kind, 0.0):.0f}" for c in columns] for kind in kinds]
    logged = {c: sum(results[c][0].values()) for c in columns}
    rows.append(["all oneDNN primitives"] + [f"{logged[c]:.0f}" for c in columns])
    rows.append(["outside oneDNN (wall - primitives)"] + [f"{1000 * results[c][1] - logged[c]:.0f}" for c in columns])
    rows.append(["step wall time"] + [f"{1000 * results[c][1]:.0f}" for c in columns])
    rows.append(["patches/s"] + [f"{args.batch / results[c][1]:.1f}" for c in columns])
    print_table(f"Training step of the full U-Net by oneDNN primitive, ms per step (batch {args.batch})",
                f"CPU: {cpu_summary()}; {args.threads} threads; ONEDNN_VERBOSE=1 (its logging slows every row a "
                f"little); mean of {args.steps} steps after 2 warm-up steps", ["primitive"] + columns, rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
