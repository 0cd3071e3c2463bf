"""How close `wflwv bench --model ldeq` comes to the released evaluation code, and what it spends.

Runs the four released configurations of tests/data/reference/ldeq/video (fixed-point iteration max 6 / tol 0.3 and
Anderson max 5 / tol 0.05, each without and with RwR, rwr_max_iters 1) through the harness on the small reference
checkpoint, at several --batch-videos, with the default sequential evaluation and with sequential=false, and prints
one row per run: the largest |prediction - released| over every landmark of every frame (pixels), cell evaluations
and solver iterations per frame, and the wall time (indicative only on a shared machine).

    python3 benchmarks/released_parity.py [--batch-videos 1 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wflwv.benchmark.harness import run_benchmark  # noqa: E402
from wflwv.benchmark.results import RunDir  # noqa: E402
from wflwv.config import parse_assignments  # noqa: E402
from wflwv.models.registry import create_model  # noqa: E402

LDEQ = ROOT / "tests" / "data" / "reference" / "ldeq"
VIDEO = LDEQ / "video"

#: the released configurations written as `--model-arg`s (the same numbers as the released args)
CASES = {
    "fpi": ["solver=fpi", "max_iters=6", "tol=0.3"],
    "anderson": ["solver=anderson", "max_iters=5", "tol=0.05"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-videos", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    meta = json.loads((VIDEO / "released_video_outputs.json").read_text())
    released = dict(np.load(VIDEO / "released_video_outputs.npz"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; clips: {', '.join(meta['clips'])}")
    head = f"{'case':<14} {'sequential':>10} {'batch':>5} {'max |d| px':>11} {'evals/frame':>11} {'iters/frame':>11} {'s':>6}"
    print(head)
    print("-" * len(head))
    for solver, args in CASES.items():
        for mode in ("full", "rwr"):
            for sequential in (True, False):
                for bv in a.batch_videos:
                    kw = parse_assignments(args + [f"weights={LDEQ / 'ldeq_small_reference.pth.tar'}"])
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = create_model("ldeq", rwr=mode == "rwr", sequential=sequential, **kw)
                    with tempfile.TemporaryDirectory() as out:
                        t0 = time.perf_counter()
                        run_benchmark(model, VIDEO, out, batch_videos=bv, device="cpu", progress=False)
                        dt = time.perf_counter() - t0
                        run = RunDir(out)
                        preds = {v: run.load_predictions(v) for v in meta["clips"]}
                    err = max(np.abs(p["landmarks"] - released[f"{solver}_{mode}_{v}"]).max() for v, p in preds.items())
                    evals = np.concatenate([p["stat_cell_evals"] for p in preds.values()]).mean()
                    iters = np.concatenate([p["stat_solver_iters"] for p in preds.values()]).mean()
                    print(
                        f"{solver + ' ' + mode:<14} {str(sequential):>10} {bv:>5} {err:>11.3g} {evals:>11.3f} "
                        f"{iters:>11.3f} {dt:>6.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
