"""Seconds per training step and peak memory per model (official full config, batch 32, 75 clips).

One step = prepare_batch + forward + official weighted loss + backward + grad clip + AdamW step,
on a batch the real Dataset/collate builds from a planted-moment store (75 clips per video, text
of 6-19 tokens). Each model runs in its own process so peak memory is its own (CPU: peak RSS of the
process; CUDA: torch.cuda.max_memory_allocated).

    .venv/bin/python benchmarks/train.py --steps 5 [--device cuda] [--models moment_detr,qd_detr]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_one(model: str, device: str, steps: int, warmup: int, threads: int, root: Path) -> dict:
    import torch

    from mrhd.features.profiles import load_profile
    from mrhd.models.registry import get_spec
    from mrhd.training.config import load_train_config
    from mrhd.training.synthetic import SyntheticSpec, make_synthetic
    from mrhd.training.trainer import Trainer

    torch.set_num_threads(threads)
    profile = load_profile(get_spec(model).default_profile)
    data = make_synthetic(root / "data", profile, SyntheticSpec(n_train=32, n_val=1, min_clips=75, max_clips=75))
    cfg = load_train_config(model, batch_size=32, num_workers=0, progress=False, device=device)
    trainer = Trainer(cfg, data["features"], data["train"], data["val"], root / "run", log=lambda m: None)
    _, batched = next(iter(trainer.train_loader))
    trainer.model.train()
    trainer.criterion.train()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_step(batched)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    out = {"model": model, "device": device, "params_M": round(n_params / 1e6, 2),
           "s_per_step": round(sorted(times)[len(times) // 2], 4), "steps": steps,
           "v_feat_dim": profile.video_dim, "batch": 32, "clips": 75}
    if device.startswith("cuda"):
        out["peak_mem_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        out["peak_rss_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["rss_growth_MiB"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="moment_detr,qd_detr,tr_detr,cg_detr,univtg,videolights,cmdnet,sg_detr,mesm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)   # child process: one model
    args = p.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            res = bench_one(args.one, args.device, args.steps, args.warmup, args.threads, Path(tmp))
        print(json.dumps(res))
        return 0
    for model in args.models.split(","):
        cmd = [sys.executable, __file__, "--one", model, "--device", args.device, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{model:12s} failed: {last}", flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        mem = res.get("peak_mem_MiB", res.get("peak_rss_MiB"))
        print(f"{model:12s} {res['params_M']:7.2f}M params  {res['s_per_step']:8.3f} s/step  "
              f"peak {mem:9.1f} MiB  ({res['device']}, batch 32, 75 clips, v_dim {res['v_feat_dim']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
