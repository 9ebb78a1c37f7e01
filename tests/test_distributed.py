"""``train.py --distribute multiworker`` for real: two worker processes on this machine joined by
TF_CONFIG over two loopback ports, on a tiny cache and a tiny U-Net, in one story (one cluster's
start-ups are the cost): when one is killed the other stops with one line, and the same commands
resume the run; the run then shows that only the chief wrote the run folder and that the workers
trained in step, with the same losses as one process on the same global batch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import train
from helpers import ROOT, history, resume_epoch, tiny_args

#: A global batch of 8 (4 per worker, so that batch norm sees enough of it), no dropout (its random
#: masks differ between processes), few steps.
MULTIWORKER = ("--batch-size", "8", "--dropout", "0", "--distribute", "multiworker")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(args: list[str], ports: list[int], logs: Path) -> list[subprocess.Popen]:
    """One train.py process per port, worker 0 (the chief) first; output to logs/worker-N.txt."""
    logs.mkdir(exist_ok=True)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    procs = []
    for index in range(len(ports)):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        with open(logs / f"worker-{index}.txt", "a") as out:
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=logs, env=env,
                                          stdout=out, stderr=subprocess.STDOUT, text=True))
    return procs


def wait_all(procs, logs: Path, timeout: float = 600) -> list[str]:
    """Wait for every process; kill them all if one is still running at the timeout. Their logs."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [(logs / f"worker-{i}.txt").read_text() for i in range(len(procs))]


@pytest.mark.slow
def test_a_killed_worker_stops_the_other_in_one_line_the_same_commands_resume_as_one_process_would(tiny_cache,
                                                                                                     tmp_path):
    run = tmp_path / "runs" / "mw"
    worker1 = run.parent / "mw.worker1"
    args = tiny_args(tiny_cache, run, 3, 2, *MULTIWORKER)
    ports = free_ports(2)
    logs_dir = tmp_path / "logs"
    procs = start_workers(args, ports, logs_dir)
    try:
        deadline = time.monotonic() + 300
        while resume_epoch(run) < 1 or resume_epoch(worker1) < 1:  # both saved the first epoch
            assert all(p.poll() is None for p in procs), [(logs_dir / f"worker-{i}.txt").read_text()[-2000:]
                                                          for i in range(2)]
            assert time.monotonic() < deadline, "training too slow"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        procs[0].wait(timeout=120)  # the survivor notices within TensorFlow's heartbeat timeout
        noticed = time.monotonic() - killed
    finally:
        logs = wait_all(procs, logs_dir, timeout=1)
    assert procs[0].returncode == 2, logs[0][-3000:]
    assert "2 replicas" in logs[0]
    errors = [line for line in logs[0].splitlines() if line.startswith("error:")]
    done = resume_epoch(run)  # 1, or 2 when the second epoch ended before worker 1 died
    assert done in (1, 2), logs[0][-3000:]
    assert len(errors) == 1 and "Traceback" not in logs[0], logs[0][-3000:]
    assert f"error: --distribute multiworker: worker 1 of the cluster stopped during epoch {done + 1}; start the " \
           f"same command again on every worker to resume after epoch {done}" == errors[0]
    print(f"the chief stopped {noticed:.1f} s after worker 1 was killed")

    for i in range(2):  # the second session's output only
        (logs_dir / f"worker-{i}.txt").unlink()
    procs = start_workers(args, ports, logs_dir)
    logs = wait_all(procs, logs_dir)
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert f"resuming after epoch {done} of 3" in logs[0] and f"resuming after epoch {done} of 3" in logs[1]
    assert "2 replicas" in logs[0] and f"{run}: finished after epoch 3" in logs[0]
    # the chief (worker 0) wrote the run folder, once per epoch; worker 1 only its own folder beside it
    assert sorted(p.name for p in run.parent.iterdir()) == ["mw", "mw.worker1"]
    assert history(run)["epoch"] == [0, 1, 2]
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 3
    # the workers trained one model in step: the same losses in both folders
    assert history(run) == history(worker1)

    single = tmp_path / "runs" / "single"  # one process, the same global batch of 8, never stopped
    assert train.main(tiny_args(tiny_cache, single, 3, 2, *MULTIWORKER[:-2])) == 0
    # batch norm normalises each worker's half batch apart, so the losses agree closely, not exactly
    np.testing.assert_allclose(history(run)["loss"], history(single)["loss"], rtol=0.05)
    np.testing.assert_allclose(history(run)["val_loss"], history(single)["val_loss"], rtol=0.05)
