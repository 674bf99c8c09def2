"""Two trainings sharing the cores, with OpenMP's waiting threads spinning (ACTIVE), spinning a while then
sleeping (libgomp's default, the variable unset) or sleeping (PASSIVE, what `make test` sets): iterations per
second of each, alone and two at once.

    python -m benchmarks.omp_wait [--seconds 15] [--threads 2]

The work is PCM-like: small maps (14x14, 32 channels) through 12 conv + batch-norm layers, forward and backward,
where each op is short and a spinning thread holds a core the other process needs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

WORK = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
x = torch.randn(64, 32, 14, 14, requires_grad=True)
conv, bn = torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32)
t, n = time.time(), 0
while time.time() - t < float(sys.argv[1]):
    y = x
    for _ in range(12):
        y = torch.relu(bn(conv(y))) + 0.1 * y
    y.sum().backward()
    n += 1
print(n / (time.time() - t))
"""


def rates(policy: str, copies: int, seconds: float, threads: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    procs = [subprocess.Popen([sys.executable, "-c", WORK, str(seconds), str(threads)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    return [float(p.communicate()[0]) for p in procs]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.omp_wait", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0, help="how long each process runs")
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    return p


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    for policy in ("ACTIVE", "unset", "PASSIVE"):
        alone = rates(policy, 1, a.seconds, a.threads)
        both = rates(policy, 2, a.seconds, a.threads)
        print(f"OMP_WAIT_POLICY={policy}: alone {alone[0]:.2f} it/s; two at once "
              + " + ".join(f"{r:.2f}" for r in both) + " it/s")


if __name__ == "__main__":
    main()
