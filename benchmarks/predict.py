"""`mrhd predict` latency: cold (decode + extract + predict), warm (cached features) and 100 queries.

    python benchmarks/predict.py [--duration 150] [--device cpu] [--model cg_detr] [--queries 100]

Runs the real architectures (full CLIP ViT-B/32, the grounding model at its official size) with
random weights, so it needs no download; timings are those of the released checkpoints. The video
is generated with PyAV (640x360, 30 fps by default). Cold = a fresh feature cache; warm = the same
video again in the same process (what `mrhd serve` does for every query): the cache finds the file
by its stat index and loads its features, then the text tower and the grounding model run. Every
warm query is a sentence the predictor has not seen (the text tower runs); a sentence asked again
comes from the predictor's query-feature cache, printed apart ("asked again").

Next to each time it prints the FLOP bound: the floating-point work of that call (counted by
``torch.utils.flop_counter``) over the rate a large float32 matmul reaches on this machine just
before (best of several runs), and the load average, since on a shared machine the same code can
take several times longer. libgomp's spin-wait is set as `mrhd serve` sets it (unless
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is in the environment; ``GOMP_SPINCOUNT=300000`` is
libgomp's default). glibc's heap is kept for reuse as `mrhd serve` keeps it on CPU (``mrhd.heap``;
``--malloc-defaults`` leaves glibc's thresholds, to compare; the page faults per call are printed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY = "a white bar sweeps across a colourful screen"
ONE = QUERY.rsplit(" ", 1)[0] + " {}"   # a warm query's sentences: as QUERY, 10 tokens
MANY = QUERY + " and a {}"                # the 100 queries' sentences: 12 tokens


CPU = {}   # CPU seconds of this process per phase: on a shared machine, wall time alone misleads


def _timed(fn, name=None):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if name:
        CPU[name] = CPU.get(name, 0.0) + time.process_time() - c
    return out, time.perf_counter() - t


def _matmul_rate(device) -> float:
    """GFLOP/s of a [1024, 512] @ [512, 2048] float32 matmul (the shape of a batched text-tower
    MLP), best of 5 runs of 20."""
    import torch

    a, b = torch.randn(1024, 512, device=device), torch.randn(512, 2048, device=device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 20 * 2 * 1024 * 512 * 2048 / best / 1e9


def _copy_rate(device) -> float:
    """GB/s of memory traffic of a 256-MB tensor copy (read + write), best of 5."""
    import torch

    a = torch.ones(64 * 2 ** 20, device=device)
    b = torch.zeros_like(a)   # touched, so no page faults are timed
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        b.copy_(a)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * a.numel() * 4 / best / 1e9


def _weight_mb(predictor) -> float:
    """MB of weights one query reads: the text towers (not CLIP's image tower) and the grounding model."""
    params = list(predictor.net.parameters())
    for enc in predictor.text_encoders.values():
        model = enc.model
        tower = getattr(model, "transformer", None)
        params += list(tower.parameters()) if tower is not None and hasattr(model, "visual") else list(model.parameters())
    return sum(p.numel() * p.element_size() for p in params) / 1e6


def _packed_linear_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's linear on a packed weight (the CPU text tower), which FlopCounterMode does not know:
    2 * rows * in * out, as for aten.addmm."""
    rows = 1
    for n in x_shape[:-1]:
        rows *= n
    return 2 * rows * w_shape[0] * w_shape[1]


def _flops(fn) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        custom[torch.ops.mkldnn._linear_pointwise] = _packed_linear_flop
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=150.0, help="video length in seconds")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="grounding model (default: the default CLIP-only one)")
    p.add_argument("--queries", type=int, default=100, help="queries for the throughput figure")
    p.add_argument("--repeats", type=int, default=20, help="warm runs to take the median of")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--video", type=Path, default=None,
                   help="a video file to use instead of generating one (--duration etc. then only label it)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the grounding model after the cold run, as `mrhd serve --compile`")
    p.add_argument("--malloc-defaults", action="store_true",
                   help="keep glibc's heap thresholds (mrhd serve raises them on CPU: mrhd.heap)")
    args = p.parse_args(argv)

    from mrhd.extract.cpu_sharing import share_cores_with_decoders
    from mrhd.heap import keep_freed_memory
    from mrhd.serve.server import OPENMP_SPIN_ROUNDS

    share_cores_with_decoders(args.device, OPENMP_SPIN_ROUNDS)   # as `mrhd serve` does; before torch loads
    heap_kept = args.device.startswith("cpu") and not args.malloc_defaults and keep_freed_memory()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mrhd.extract.synthetic import write_video
    from mrhd.inference.predict import Predictor
    from mrhd.inference.video_features import FeatureCache

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video, t_write = (args.video, 0.0) if args.video else \
            _timed(lambda: write_video(tmp / "bench.mp4", duration=args.duration, fps=args.fps,
                                       width=args.width, height=args.height))
        cache = FeatureCache(tmp / "cache")
        predictor, t_load = _timed(lambda: Predictor.from_pretrained("random", device=args.device,
                                                                      model=args.model, cache=cache.root))
        device = predictor.device
        # cold: nothing cached
        feats, t_extract = _timed(lambda: predictor.encode_video(video), "extract")
        _, t_pred1 = _timed(lambda: predictor.predict(feats, [QUERY]), "cold predict")
        cold = t_extract + t_pred1

        tokenizer = getattr(predictor.text_encoders.get("clip_text"), "tokenizer", None)
        # fillers that are one CLIP token each (whole words of the BPE vocabulary), so that every
        # sentence below has as many tokens as the template with the first of them
        fillers = iter(sorted(w[:-4] for w in tokenizer.encoder if w.endswith("</w>") and w[:-4].isalpha()
                              and w[:-4].isascii()) if tokenizer is not None else map(str, range(10 ** 9)))

        def new_sentences(n, template=ONE):
            """n sentences never asked before, so the query-feature cache cannot answer them (the text
            tower runs for each), all of the template's token count."""
            def tokens(text):
                return len(tokenizer.encode(text)) if tokenizer is not None else 0

            out, want = [], tokens(template.format("x"))
            while len(out) < n:
                text = template.format(next(fillers))
                if tokens(text) == want:
                    out.append(text)
            return out

        def warm_query():
            return predictor.predict(predictor.encode_video(video), new_sentences(1))

        def repeated_query():
            return predictor.predict(predictor.encode_video(video), [QUERY])

        def many_queries():
            return predictor.predict(predictor.encode_video(video), new_sentences(args.queries, MANY))

        t_compile = None
        if args.compile:
            predictor.compile_model()
            # the compilation (one query: batch 1; two: any larger batch), made at start-up by `mrhd serve --compile`
            t_compile = _timed(warm_query)[1] + _timed(lambda: predictor.predict(feats, new_sentences(2)))[1]
        warm_query()   # first calls allocate; a server has made them long before
        repeated_query()
        weight_mb = _weight_mb(predictor)
        rate, bandwidth = _matmul_rate(device), _copy_rate(device)
        warm, repeated, lookups, texts = [], [], [], []
        for _ in range(args.repeats):   # interleaved, so that a change of load hits all alike
            warm.append(_timed(warm_query, "warm")[1])
            repeated.append(_timed(repeated_query, "repeated")[1])
            lookups.append(_timed(lambda: predictor.encode_video(video))[1])
            texts.append(_timed(lambda: predictor.encode_queries(new_sentences(1)))[1])
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        many = [_timed(many_queries, "many")[1] for _ in range(3)]
        faults_many = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / len(many)
        compiled, predictor.net = predictor.net, predictor.eager_net   # FLOPs counted on the eager network
        gflop_one, gflop_many = _flops(warm_query), _flops(many_queries)
        gflop_repeated = _flops(repeated_query)
        predictor.net = compiled
        gflop_text_many = _flops(lambda: predictor.encode_queries(new_sentences(args.queries, MANY)))
    load_after = os.getloadavg()

    dev = args.device
    if dev.startswith("cuda"):
        dev = f"{dev} ({torch.cuda.get_device_name(device)})"
    enc = predictor.text_encoders.get("clip_text")
    n_tokens = len(enc.tokenizer.encode(ONE.format("x"))) + 2 if enc is not None else None
    n_tokens_many = len(enc.tokenizer.encode(MANY.format("x"))) + 2 if enc is not None else None
    print(f"model {predictor.model_name} (random weights, official size), profile {predictor.profile.name}, "
          f"device {dev}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"text tower {'packed for oneDNN' if getattr(enc, 'packed', None) else 'open_clip'}, "
          f"GOMP_SPINCOUNT {os.environ.get('GOMP_SPINCOUNT', 'default')}, "
          f"heap {'kept for reuse (mrhd.heap)' if heap_kept else 'glibc defaults'}"
          + (f", model compiled (torch.compile, dynamic shapes; compiling took {t_compile:.0f} s)"
             if t_compile is not None else ", model eager"))
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min); "
          f"float32 matmul {rate:.0f} GFLOP/s, memory copy {bandwidth:.1f} GB/s now")
    print(f"video {args.duration:.0f} s {args.width}x{args.height} @ {args.fps:g} fps, {feats.n_clips} clips "
          f"(generated in {t_write:.1f} s); model + encoders built in {t_load:.1f} s")
    print(f"cold  (decode + CLIP + predict, 1 query):  {cold:7.2f} s wall, "
          f"{CPU['extract'] + CPU['cold predict']:.1f} s CPU (extract {t_extract:.2f} s, predict {t_pred1:.2f} s)")
    med = statistics.median(warm)
    print(f"warm  (cached features, 1 query, {n_tokens} tokens): {med * 1e3:7.1f} ms median of {len(warm)} "
          f"(min {min(warm) * 1e3:.1f}), {CPU['warm'] / len(warm) * 1e3:.1f} ms CPU; "
          f"{gflop_one:.2f} GFLOP, FLOP bound {gflop_one / rate * 1e3:.1f} ms; {weight_mb:.0f} MB of weights, "
          f"bandwidth bound {weight_mb / 1e3 / bandwidth * 1e3:.1f} ms")
    print(f"      of which cache lookup {statistics.median(lookups) * 1e3:.2f} ms, "
          f"text tower {statistics.median(texts) * 1e3:.1f} ms")
    print(f"      asked again (query features cached): {statistics.median(repeated) * 1e3:.1f} ms median, "
          f"{CPU['repeated'] / len(repeated) * 1e3:.1f} ms CPU; {gflop_repeated:.2f} GFLOP, "
          f"FLOP bound {gflop_repeated / rate * 1e3:.1f} ms")
    best = min(many)
    print(f"{args.queries} queries on cached features: {statistics.median(many):6.2f} s median of 3 "
          f"(best {best:.2f} s = {args.queries / best:.0f} queries/s), {CPU['many'] / len(many):.2f} s CPU; "
          f"{gflop_many:.0f} GFLOP ({gflop_text_many:.0f} in the text tower; {n_tokens_many} tokens each), "
          f"FLOP bound {gflop_many / rate:.2f} s; {faults_many:,.0f} page faults per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
