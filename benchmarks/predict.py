"""`mrhd predict` latency: cold (decode + extract + predict), warm (cached features) and queries/s.

    python benchmarks/predict.py [--duration 150] [--device cpu] [--model cg_detr] [--queries 100]

Runs the real architectures (full CLIP ViT-B/32, the grounding model at its official size) with
random weights, so it needs no download; timings are those of the released checkpoints. The video
is generated with PyAV (640x360, 30 fps by default). Cold = a fresh feature cache; warm = the same
video again, features read from the cache by content hash.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY = "a white bar sweeps across a colourful screen"


CPU = {}   # CPU seconds of this process per phase: on a shared machine, wall time alone misleads


def _timed(fn, name=None):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if name:
        CPU[name] = CPU.get(name, 0.0) + time.process_time() - c
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=150.0, help="video length in seconds")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="grounding model (default: the default CLIP-only one)")
    p.add_argument("--queries", type=int, default=100, help="queries for the throughput figure")
    p.add_argument("--repeats", type=int, default=3, help="warm runs to take the median of")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mrhd.extract.synthetic import write_video
    from mrhd.inference.predict import Predictor
    from mrhd.inference.video_features import FeatureCache

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video, t_write = _timed(lambda: write_video(tmp / "bench.mp4", duration=args.duration, fps=args.fps,
                                                     width=args.width, height=args.height))
        cache = FeatureCache(tmp / "cache")
        predictor, t_load = _timed(lambda: Predictor.from_pretrained("random", device=args.device,
                                                                      model=args.model, cache=cache.root))
        # cold: nothing cached
        feats, t_extract = _timed(lambda: predictor.encode_video(video), "extract")
        _, t_pred1 = _timed(lambda: predictor.predict(feats, [QUERY]), "cold predict")
        cold = t_extract + t_pred1
        # warm: features from the cache (read + hash), then one query
        warm = []
        for _ in range(args.repeats):
            warm.append(_timed(lambda: predictor.predict(predictor.encode_video(video), [QUERY]), "warm")[1])
        queries = [f"{QUERY} number {i}" for i in range(args.queries)]
        _, t_many = _timed(lambda: predictor.predict(feats, queries), "many")

    dev = args.device
    if dev.startswith("cuda"):
        dev = f"{dev} ({torch.cuda.get_device_name(torch.device(dev))})"
    print(f"model {predictor.model_name} (random weights, official size), profile {predictor.profile.name}, "
          f"device {dev}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"video {args.duration:.0f} s {args.width}x{args.height} @ {args.fps:g} fps, {feats.n_clips} clips "
          f"(generated in {t_write:.1f} s); model + encoders built in {t_load:.1f} s")
    print(f"cold  (decode + CLIP + predict, 1 query): {cold:7.2f} s wall, "
          f"{CPU['extract'] + CPU['cold predict']:.1f} s CPU (extract {t_extract:.2f} s, predict {t_pred1:.2f} s)")
    print(f"warm  (cached features, 1 query):         {statistics.median(warm):7.3f} s wall, "
          f"{CPU['warm'] / len(warm):.2f} s CPU (median of {len(warm)})")
    print(f"throughput on cached features: {args.queries} queries in {t_many:.2f} s wall = "
          f"{args.queries / t_many:.1f} queries/s ({args.queries / CPU['many']:.1f} per CPU second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
