"""Where the per-step cost of a distributed range test on a small model goes.

The same 2 processes, pinned cores, model (``mlp`` of ``run.py``) and batches as ``run.py``;
each round times 100 DDP training steps (forward, loss, backward, SGD step) in a rotating
order, as:

- ``plain``: the steps alone;
- ``item_only``: plus what a sweep does around its all-reduce without the collective
  (``loss.item()`` into a float64 buffer and back);
- ``blocking``: plus one all-reduce of that scalar on DDP's process group after each step,
  waited on at once (what ``range_test`` does);
- ``overlapped``: the all-reduce on a second process group of the same ranks, started
  right after the forward pass and waited on after the optimizer step, so it runs beside
  DDP's gradient all-reduce;
- ``never_waited``: the all-reduce on the second group started after each step and waited
  on only after the 100th: a bound for any scheme that hides the collective behind
  compute, since what is left is the collective's own work;
- ``sweep``: ``range_test`` itself.

It reports each variant's ratio to ``plain`` (median over rounds, 95% bootstrap interval),
for rank 0's wall-clock time and the CPU time of both ranks together, and the wall and CPU
time of one scalar all-reduce in a tight loop. Run from the repository root::

    OMP_NUM_THREADS=1 nice -n 10 python studies/ddp_overhead/collective_cost.py --rounds 30
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from typing import Any

import numpy as np
from run import START_LR, batches_for, build, summarize, sweep
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

VARIANTS = ("plain", "item_only", "blocking", "overlapped", "never_waited", "sweep")


def steps(variant: str, model: Any, optimizer: Any, batches: list, side: Any) -> None:
    buffer = torch.zeros(1, dtype=torch.float64)
    pending = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if variant == "overlapped":
            buffer.fill_(loss.item())
            work = dist.all_reduce(buffer, group=side, async_op=True)
        loss.backward()
        optimizer.step()
        if variant == "item_only":
            buffer.fill_(loss.item())
            buffer.item()
        elif variant == "blocking":
            buffer.fill_(loss.item())
            dist.all_reduce(buffer)
            buffer.item()
        elif variant == "overlapped":
            work.wait()
            buffer.item()
        elif variant == "never_waited":
            pending.append(dist.all_reduce(loss.detach().double(), group=side, async_op=True))
    for work in pending:
        work.wait()


def worker(rank: int, rounds: int, store: str, out: dict) -> None:
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {rank % (os.cpu_count() or 1)})
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    side = dist.new_group([0, 1])
    batches = batches_for(rank)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds + 2):
        shift = r % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            model = DDP(build("mlp"))
            optimizer = torch.optim.SGD(model.parameters(), lr=START_LR, momentum=0.9)
            gc.collect()
            dist.barrier()
            gc.disable()
            start, cpu_start = time.perf_counter(), time.process_time()
            if variant == "sweep":
                sweep(model, optimizer, batches)
            else:
                steps(variant, model, optimizer, batches, side)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            gc.enable()
            if r >= 2:  # two warm-up rounds
                wall[variant].append(seconds)
                cpu[variant].append(cpu_seconds)
    buffer = torch.zeros(1, dtype=torch.float64)
    tight = []
    for _ in range(5):
        dist.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(500):
            dist.all_reduce(buffer)
        tight.append(
            ((time.perf_counter() - start) / 500, (time.process_time() - cpu_start) / 500)
        )
    gathered: list[Any] = [None, None]
    dist.all_gather_object(gathered, (cpu, tight))
    if rank == 0:
        both = {
            v: [a + b for a, b in zip(*(g[0][v] for g in gathered), strict=True)] for v in VARIANTS
        }
        out.update(wall=wall, cpu=both, tight=[g[1] for g in gathered])
    gc.collect()  # DDP models in reference cycles go while the group exists, not at exit
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp, mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(args.rounds, os.path.join(tmp, "store"), out), nprocs=2)
        out = dict(out)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.rounds} rounds of 100 steps; ratio to plain: median (95% interval)")
    print(
        "| variant | plain wall ms/step | wall ratio | CPU (both ranks) ratio "
        "| CPU ms/step/rank over plain |"
    )
    print("|---|---:|---:|---:|---:|")
    plain_wall = float(np.median(out["wall"]["plain"])) * 10
    plain_cpu = float(np.median(out["cpu"]["plain"])) * 10 / 2
    for variant in VARIANTS[1:]:
        cells = []
        for clock in ("wall", "cpu"):
            s = summarize(
                [a / b for a, b in zip(out[clock][variant], out[clock]["plain"], strict=True)]
            )
            cells.append(
                f"{s['median']:.3f} ({s['median_ci95_low']:.3f}-{s['median_ci95_high']:.3f})"
            )
        extra = float(np.median(out["cpu"][variant])) * 10 / 2 - plain_cpu
        print(f"| {variant} | {plain_wall:.2f} | {cells[0]} | {cells[1]} | {extra:+.2f} |")
    for rank, tight in enumerate(out["tight"]):
        w, c = np.median([t[0] for t in tight]), np.median([t[1] for t in tight])
        print(
            f"tight loop, rank {rank}: one scalar all-reduce {1e3 * w:.3f} ms wall, "
            f"{1e3 * c:.3f} ms CPU"
        )


if __name__ == "__main__":
    main()
