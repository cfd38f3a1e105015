"""Seconds per training step, peak memory and (CUDA) GPU utilisation of every model at its official
batch size, through the Trainer with its defaults (docs/training-speed.md).

One step = the next batch from the training DataLoader (data time) + Trainer.train_step: forward,
official weighted loss, backward, grad clip, AdamW step (compute time). Data: planted-moment stores
with QVHighlights' clip and token counts (mrhd.training.synthetic.qvhighlights_like), four batches'
worth, so the steps cycle through epochs as a real run does (features in RAM after the first).
Each model runs in its own process so that peak memory is its own (CPU: peak RSS; CUDA:
torch.cuda.max_memory_allocated). GPU utilisation: the share of the measured steps' wall time
during which a CUDA kernel ran (torch.profiler), which is what nvidia-smi's figure means.

    .venv/bin/python benchmarks/train.py --steps 5 [--device cuda] [--models moment_detr,qd_detr]
    .venv/bin/python benchmarks/train.py --device cuda --set exact=true     # the exact eager path
    .venv/bin/python benchmarks/train.py --device cuda --set compile=true   # torch.compile
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALL = "moment_detr,qd_detr,tr_detr,cg_detr,univtg,videolights,cmdnet,sg_detr,mesm"


def _settings(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def gpu_busy(trainer, batches, steps: int) -> float:
    """Kernel time / wall time over ``steps`` steps (torch.profiler, CUDA activity)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(batches))
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(getattr(e, "device_time", 0.0) for e in kernels)
    return min(1.0, busy_us / 1e6 / wall)


def bench_one(model: str, args, root: Path) -> dict:
    import torch

    from mrhd.features.profiles import load_profile
    from mrhd.models.registry import get_spec
    from mrhd.training.config import load_train_config
    from mrhd.training.synthetic import make_synthetic, qvhighlights_like
    from mrhd.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    batch = args.batch_size or load_train_config(model).batch_size
    profile = load_profile(get_spec(model).default_profile)
    data = make_synthetic(root / "data", profile, qvhighlights_like(n_train=4 * batch, n_val=2))
    cfg = load_train_config(model, batch_size=batch, progress=False, device=args.device, **_settings(args.set))
    trainer = Trainer(cfg, data["features"], data["train"], data["val"], root / "run", log=lambda m: None)

    def batches():
        while True:
            yield from trainer.epoch_batches()

    it = batches()
    for _ in range(args.warmup):
        trainer.train_step(next(it))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    data_s, compute_s = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        b = next(it)
        t1 = time.perf_counter()
        trainer.train_step(b)
        if cuda:
            torch.cuda.synchronize()
        data_s.append(t1 - t0)
        compute_s.append(time.perf_counter() - t1)
    trainer.sync_losses()
    out = {"model": model, "device": args.device, "batch": batch, "speed": trainer.speed.describe(),
           "params_M": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2),
           "s_per_step": statistics.median(d + c for d, c in zip(data_s, compute_s)),
           "data_s": statistics.median(data_s), "v_feat_dim": profile.video_dim}
    if cuda:
        out["peak_mem_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu_util"] = gpu_busy(trainer, it, args.steps)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_MiB"] = round(peak / 1024, 1)
        out["rss_growth_MiB"] = round((peak - rss0) / 1024, 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=ALL)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="steps before timing (compile, caches)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="default: each model's official batch size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training option")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)   # child process: one model
    args = p.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            res = bench_one(args.one, args, Path(tmp))
        print(json.dumps(res))
        return 0
    for model in args.models.split(","):
        cmd = [sys.executable, __file__, "--one", model, "--device", args.device, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        for pair in args.set:
            cmd += ["--set", pair]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{model:12s} failed: {last}", flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        mem = res.get("peak_mem_MiB", res.get("peak_rss_MiB"))
        util = f"  GPU busy {100 * res['gpu_util']:5.1f} %" if "gpu_util" in res else ""
        print(f"{model:12s} {res['params_M']:7.2f}M params  batch {res['batch']:3d}  {res['s_per_step']:8.3f} s/step "
              f"(data {res['data_s']:.3f})  peak {mem:9.1f} MiB{util}  ({res['device']}: {res['speed']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
