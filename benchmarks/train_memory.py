"""Peak memory of one LDEQ training step vs the number of forward solver iterations, implicit vs unrolled.

Each (grad mode, iterations) configuration runs in a fresh subprocess so that measurements do not leak into each
other. Measured per step (forward + loss + backward):

* ``peak_mb``: on CUDA, ``torch.cuda.max_memory_allocated`` minus the allocation before the step; on CPU, the
  increase of the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its
  value just before the step (model, inputs and the torch runtime are already loaded, nothing else runs in the
  process). This is real memory, including the no-grad solver's buffers and one-time allocator / oneDNN set-up
  (the same in every configuration). The workers run with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed
  tensors leave the resident set at once (glibc's adaptive threshold otherwise keeps freed blocks in the heap and
  makes the peak depend on allocation order).
* ``saved_mb``: the bytes of tensors autograd keeps for the backward pass (counted with
  ``torch.autograd.graph.saved_tensors_hooks``; each storage counted once) -- the part that unrolling multiplies.

Usage::

    python benchmarks/train_memory.py                       # small config, CPU
    python benchmarks/train_memory.py --iters 5 10 20 40 --width 16 --batch 2 --device cuda

The acceptance criterion checked at the end: implicit peak within 10 % from the smallest to the largest
iteration count; unrolled peak grows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(mode: str, iters: int, width: int, landmarks: int, batch: int, device: str, seed: int) -> dict:
    import resource

    import torch

    sys.path.insert(0, str(ROOT))
    from wflwv.models.ldeq import LDEQConfig, LDEQNet

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    cfg = LDEQConfig(
        num_landmarks=landmarks,
        injection_width=width,
        cell_base_width=width,
        cell_width_increment=max(width // 2, 1),
        solver="fpi",
        max_iters=iters,
        tol_rel=0.0,
        backward_max_iters=iters,
        grad_mode=mode,
    )
    dev = torch.device(device)
    net = LDEQNet(cfg).to(dev).train()
    x = torch.randn(batch, 3, cfg.input_size, cfg.input_size, device=dev)
    target = torch.rand(batch, landmarks, 2, device=dev)

    saved: dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            saved[st.data_ptr()] = st.nbytes()
        except Exception:  # noqa: BLE001 - e.g. sparse / meta tensors
            pass
        return t

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
        loss = torch.nn.functional.mse_loss(out["keypoints"], target)
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    iters_done = int(out["solver_iters"].max())
    bwd = net.last_backward_stats
    return {
        "mode": mode,
        "iters": iters,
        "iters_done": iters_done,
        "backward_iters": int(bwd.iterations.max()) if bwd is not None else 0,
        "peak_mb": peak,
        "saved_mb": sum(saved.values()) / 2**20,
    }


def run(iters_list, modes, width, landmarks, batch, device, seed=0) -> list[dict]:
    rows = []
    for mode in modes:
        for it in iters_list:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                mode,
                str(it),
                "--width",
                str(width),
                "--landmarks",
                str(landmarks),
                "--batch",
                str(batch),
                "--device",
                device,
                "--seed",
                str(seed),
            ]
            env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            # a fixed glibc mmap threshold: every large tensor gets its own mapping that is returned to the OS when
            # freed, so the resident set follows live memory (no dynamic-threshold / heap-fragmentation noise)
            env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"worker {mode}/{it} failed:\n{res.stderr[-2000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--modes", nargs="+", default=["implicit", "unrolled"], choices=["implicit", "jfb", "unrolled"])
    ap.add_argument("--width", type=int, default=16, help="injection / cell base width (increment = width / 2)")
    ap.add_argument("--landmarks", type=int, default=98)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "ITERS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(a.worker[0], int(a.worker[1]), a.width, a.landmarks, a.batch, a.device, a.seed)))
        return 0
    rows = run(a.iters, a.modes, a.width, a.landmarks, a.batch, a.device, a.seed)
    what = "CUDA max_memory_allocated increase" if a.device.startswith("cuda") else "peak RSS increase"
    print(
        f"LDEQ training step memory: width {a.width}, {a.landmarks} landmarks, batch {a.batch}, 256x256 input, "
        f"fpi solver, tol 0 ({a.device}; peak = {what})"
    )
    print(f"{'grad mode':<10} {'iters':>5} {'bwd iters':>9} {'peak MB':>9} {'autograd-saved MB':>18}")
    for r in rows:
        print(
            f"{r['mode']:<10} {r['iters_done']:>5} {r['backward_iters']:>9} {r['peak_mb']:>9.1f} {r['saved_mb']:>18.1f}"
        )
    ok = True
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in a.modes}
    if "implicit" in by_mode and len(by_mode["implicit"]) > 1:
        p = [r["peak_mb"] for r in by_mode["implicit"]]
        flat = max(p) <= 1.10 * min(p)
        ok &= flat
        print(f"implicit: peak {min(p):.1f}..{max(p):.1f} MB -> {'flat (within 10%)' if flat else 'NOT flat'}")
    if "unrolled" in by_mode and len(by_mode["unrolled"]) > 1:
        p = [r["peak_mb"] for r in by_mode["unrolled"]]
        grows = all(b > a_ for a_, b in zip(p, p[1:]))
        ok &= grows
        print(f"unrolled: peak {p[0]:.1f} -> {p[-1]:.1f} MB -> {'grows' if grows else 'does NOT grow monotonically'}")
    print("acceptance:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
