"""Where the range test's extra time goes: per step, before the first step, after the last.

``run.py`` gives the ratio of a whole sweep to 100 plain steps; this script splits the
difference. The model is wrapped so that a time stamp is taken when its forward starts,
and ``optimizer.step`` so that one is taken when it returns. For plain training and for
``range_test`` alike, on the same batches, it records:

- **gap**: from the end of one optimizer step to the start of the next forward pass, the
  median over the steps of a run (zero_grad is in it for both; for the range test also
  reading the loss, the loop's bookkeeping, setting the rates, fetching and checking the
  batch);
- **head**: from the call to the first forward pass (the range test's argument checks,
  schedule and snapshot);
- **tail**: from the last optimizer step to the return (the restore).

The two run alternately, each on a fresh model and optimizer after ``gc.collect()`` as in
``run.py``; the report gives medians over the runs and what the differences add up to as a
share of the plain run. Run from the repository root::

    python studies/overhead/anatomy.py --task mlp --runs 60
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import NUM_ITER, make_task, new_optimizer, ours, plain  # noqa: E402

clock = time.perf_counter_ns


class Stamped(nn.Module):
    """The model, with a time stamp at the start of every forward pass."""

    def __init__(self, inner: nn.Module, stamps: list[int]) -> None:
        super().__init__()
        self.inner = inner
        self.stamps = stamps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.stamps.append(clock())
        return self.inner(x)


def one_run(kind: str, factory: Any, batches: list) -> dict[str, float]:
    stamps: list[int] = []
    model = Stamped(factory(), stamps)
    optimizer = new_optimizer(model)
    step = optimizer.step

    def stamped_step(*args: Any, **kwargs: Any) -> Any:
        out = step(*args, **kwargs)
        stamps.append(clock())
        return out

    optimizer.step = stamped_step  # type: ignore[method-assign]
    gc.collect()
    gc.disable()
    try:
        start = clock()
        # The same two functions run.py times: plain training and range_test.
        (plain if kind == "plain" else ours)(model, optimizer, batches)
        end = clock()
    finally:
        gc.enable()
    assert len(stamps) == 2 * NUM_ITER, len(stamps)
    gaps = [stamps[i + 1] - stamps[i] for i in range(1, len(stamps) - 1, 2)]
    return {
        "gap": statistics.median(gaps) / 1e3,
        "head": (stamps[0] - start) / 1e3,
        "tail": (end - stamps[-1]) / 1e3,
        "total": (end - start) / 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mlp", choices=["mlp", "cnn", "gru"])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    factory, batches = make_task(args.task)
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "range_test": []}
    for r in range(args.runs + 2):  # two warm-up rounds
        for kind in ("plain", "range_test") if r % 2 else ("range_test", "plain"):
            result = one_run(kind, factory, batches)
            if r >= 2:
                runs[kind].append(result)
    med = {
        kind: {key: statistics.median(run[key] for run in rs) for key in rs[0]}
        for kind, rs in runs.items()
    }
    print(f"{args.task}, {args.runs} runs each, medians in microseconds")
    print(f"{'':12s}{'gap/step':>10s}{'head':>10s}{'tail':>10s}{'total':>12s}")
    for kind, m in med.items():
        print(f"{kind:12s}{m['gap']:10.2f}{m['head']:10.1f}{m['tail']:10.1f}{m['total']:12.1f}")
    plain, ours = med["plain"], med["range_test"]
    per_step = (ours["gap"] - plain["gap"]) * (NUM_ITER - 1)
    fixed = ours["head"] - plain["head"] + ours["tail"] - plain["tail"]
    extra = ours["gap"] - plain["gap"]
    print(
        f"extra: {extra:.2f} us a step ({100 * per_step / plain['total']:.2f}% of the plain "
        f"run), {fixed:.0f} us before and after the steps ({100 * fixed / plain['total']:.2f}%)"
    )


if __name__ == "__main__":
    main()
