"""What a distributed range test costs per step over plain DDP training steps, on 2 ranks.

Two processes (gloo, CPU, one thread each) train an MLP on 100 fixed batches of 64
samples per rank: ``mlp`` is the MLP of ``studies/overhead`` (64-256-256-10), ``wide_mlp``
the same with 1024 hidden units (steps about ten times longer). Each round times, in a
rotating order:

a. ``ddp_plain``: 100 DDP training steps (``zero_grad``, forward, loss, backward with
   DDP's gradient all-reduce, ``step``), on both ranks;
b. ``ddp_sweep``: ``range_test(ddp_model, ..., num_iter=100)`` on both ranks: the same
   steps, plus one scalar all-reduce each, snapshot and restore included;
c. ``single_plain`` and d. ``single_sweep``: the same on rank 0 alone, without DDP (rank 1
   waits at a barrier), for the single-process figure.

The rate runs from 1e-4 to 1e-2 with a divergence threshold of 1e6, so every sweep takes
exactly 100 steps (checked), and the swept model is checked to be given back intact. The
ratios b/a and d/c of each round are summarized by their median, a 95% bootstrap interval
of the median, the interquartile range and the extremes, on two clocks: rank 0's
wall-clock time (under DDP a rank's waiting for the other is part of a step's cost) and
the CPU time of both ranks together (the work, without the waiting). Rank r is pinned to
core r.

Run from the repository root::

    nice -n 10 python studies/ddp_overhead/run.py --rounds 100 --out studies/ddp_overhead
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import gc
import json
import os
from pathlib import Path
import platform
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from optuna_lrrange.pytorch import range_test

NUM_ITER = 100
START_LR, END_LR = 1e-4, 1e-2
DIVERGE = 1e6
BATCH = 64  # per rank
KINDS = ("ddp_plain", "ddp_sweep", "single_plain", "single_sweep")


#: Hidden width of each task's MLP: ``studies/overhead``'s (85k parameters), and a wider one
#: (1.1M parameters) whose steps are about ten times longer.
WIDTHS = {"mlp": 256, "wide_mlp": 1024}


def build(task: str) -> nn.Module:
    torch.manual_seed(0)
    width = WIDTHS[task]
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )


def batches_for(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1 + rank)
    return [
        (torch.randn(BATCH, 64, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
        for _ in range(NUM_ITER)
    ]


def plain(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> tuple[int, float]:
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return len(batches), loss.item()


def sweep(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> tuple[int, float]:
    result = range_test(
        model,
        optimizer,
        F.cross_entropy,
        batches,
        start_lr=START_LR,
        end_lr=END_LR,
        num_iter=NUM_ITER,
        diverge_factor=DIVERGE,
    )
    return len(result), result.losses[-1]


def timed(task: str, kind: str, batches: list) -> tuple[float, float, int, float]:
    """Wall-clock and process CPU seconds of one run of ``kind`` on this rank, its steps and
    last loss."""
    distributed = kind.startswith("ddp")
    model = DDP(build(task)) if distributed else build(task)
    optimizer = torch.optim.SGD(model.parameters(), lr=START_LR, momentum=0.9)
    run: Callable[..., tuple[int, float]] = sweep if kind.endswith("sweep") else plain
    gc.collect()
    dist.barrier()
    gc.disable()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        steps, loss = run(model, optimizer, batches)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        gc.enable()
    if kind.endswith("sweep"):
        reference = build(task).state_dict()
        inner = model.module if distributed else model
        for key, value in inner.state_dict().items():
            assert torch.equal(value, reference[key]), (kind, key)
    return seconds, cpu, steps, loss


def worker(rank: int, tasks: list[str], rounds: int, warmup: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {rank % (os.cpu_count() or 1)})  # one core per rank
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    batches = batches_for(rank)
    raw: dict[str, Any] = {}
    for task in tasks:
        times: dict[str, list[float]] = {k: [] for k in KINDS}
        cpu_times: dict[str, list[float]] = {k: [] for k in KINDS}
        losses: dict[str, list[float]] = {k: [] for k in KINDS}
        for r in range(warmup + rounds):
            shift = r % len(KINDS)
            for kind in KINDS[shift:] + KINDS[:shift]:
                if kind.startswith("single") and rank != 0:
                    dist.barrier()  # matches rank 0's barrier in timed()
                    continue
                seconds, cpu, steps, loss = timed(task, kind, batches)
                assert steps == NUM_ITER, (kind, steps)
                if r >= warmup:
                    times[kind].append(seconds)
                    cpu_times[kind].append(cpu)
                    losses[kind].append(loss)
        # CPU time of both ranks together (rank 1 takes no part in the single-process runs).
        gathered: list[Any] = [None, None]
        dist.all_gather_object(gathered, cpu_times)
        for kind in ("ddp_plain", "ddp_sweep"):
            cpu_times[kind] = [a + b for a, b in zip(*(g[kind] for g in gathered), strict=True)]
        raw[task] = {"wall": times, "cpu": cpu_times, "losses": losses}
    if rank == 0:
        Path(out).write_text(json.dumps(raw))
    # DDP models left in reference cycles must go while the group exists: freed at exit,
    # after destroy_process_group, they abort the process ("terminate called without an
    # active exception") in about half the runs on this machine.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def summarize(values: list[float]) -> dict[str, float]:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    resampled = np.random.default_rng(0).choice(values, size=(10_000, len(values)))
    low, high = np.percentile(np.median(resampled, axis=1), [2.5, 97.5])
    return {
        "median": float(median),
        "median_ci95_low": float(low),
        "median_ci95_high": float(high),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Cost of a distributed range test per step (`studies/ddp_overhead`)",
        "",
        f"Command: `{results['command']}`",
        "",
        f"{results['rounds']} rounds per task after {results['warmup']} warm-up rounds; "
        f"{results['machine']}; load average before the run {results['loadavg_before']}, "
        f"after it {results['loadavg_after']}.",
        "",
        "Ratio sweep / plain training per round: median (95% bootstrap interval of the "
        "median) [interquartile range] (min-max). Wall: rank 0's wall-clock time. CPU: the "
        "process CPU time of both ranks together (of rank 0 alone for one process).",
        "",
        "| task | setting | clock | plain, ms per 100 steps (median) | sweep / plain |",
        "|---|---|---|---:|---:|",
    ]
    for task, result in results["tasks"].items():
        for setting in ("ddp", "single"):
            for clock in ("wall", "cpu"):
                s = result["ratios"][clock][setting]
                plain = 1000 * result["plain_seconds"][clock][setting]
                lines.append(
                    f"| {task} | {'2 ranks, DDP' if setting == 'ddp' else '1 process'} | "
                    f"{clock} | {plain:.0f} | **{s['median']:.3f}** "
                    f"({s['median_ci95_low']:.3f}-{s['median_ci95_high']:.3f}) "
                    f"[{s['q1']:.3f}-{s['q3']:.3f}] ({s['min']:.3f}-{s['max']:.3f}) |"
                )
    lines.append("")
    for task, result in results["tasks"].items():
        lines.append(
            f"{task}: last loss of each run (median over rounds): "
            + ", ".join(f"{k} {v:.4f}" for k, v in result["last_loss"].items())
            + "."
        )
    lines.append("")
    return "\n".join(lines)


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    """Ratios, plain-training seconds and last losses of one task's raw seconds."""
    ratios = {
        clock: {
            setting: summarize(
                [
                    sweep / plain
                    for sweep, plain in zip(
                        data[clock][f"{setting}_sweep"],
                        data[clock][f"{setting}_plain"],
                        strict=True,
                    )
                ]
            )
            for setting in ("ddp", "single")
        }
        for clock in ("wall", "cpu")
    }
    return {
        "ratios": ratios,
        "plain_seconds": {
            clock: {
                setting: float(np.median(data[clock][f"{setting}_plain"]))
                for setting in ("ddp", "single")
            }
            for clock in ("wall", "cpu")
        },
        "last_loss": {k: float(np.median(v)) for k, v in data["losses"].items()},
        "seconds": {"wall": data["wall"], "cpu": data["cpu"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("studies/ddp_overhead"))
    parser.add_argument("--command", default=None, help="the command line, as recorded")
    args = parser.parse_args()
    loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.json")
        mp.spawn(
            worker,
            args=(args.tasks, args.rounds, args.warmup, os.path.join(tmp, "store"), raw),
            nprocs=2,
        )
        data = json.loads(Path(raw).read_text())
    results = {
        "command": args.command
        or f"nice -n 10 python studies/ddp_overhead/run.py --rounds {args.rounds} "
        f"--out {args.out}",
        "rounds": args.rounds,
        "warmup": args.warmup,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, one thread per process, rank r pinned to core r",
        "loadavg_before": loadavg_before,
        "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "tasks": {task: analyse(data[task]) for task in args.tasks},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
