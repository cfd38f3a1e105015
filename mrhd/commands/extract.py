"""Decode videos and write per-clip features of frozen encoders to one HDF5 store per stream.

PATH is a video file, a folder (searched recursively) or a .txt list of paths. Re-running skips
videos already stored (the store records which file each came from: another file under the same
video id is refused); --overwrite recomputes them. A video that cannot be decoded is reported and
skipped; the exit status is then non-zero and the summary names every failed file. Runs that share
an --out folder share the work. With --queries and no PATH, only the queries are encoded.
"""

from __future__ import annotations

import argparse
import os
import sys

from mrhd.encoders.streams import TEXT_STREAM_OF, VIDEO_ENCODERS
from mrhd.errors import MrhdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="video file, folder or .txt list of paths (none: only --queries)")
    p.add_argument("--encoders", default="clip,slowfast",
                   help=f"comma-separated: {', '.join(VIDEO_ENCODERS)} (default: clip,slowfast)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the <stream>.h5 stores")
    p.add_argument("--queries", nargs="+", action="extend", default=[], metavar="ANNOTATIONS.jsonl",
                   help="also encode every query of these annotation files (e.g. train and val) with the "
                        "matching text encoders (clip -> clip_text, ...)")
    p.add_argument("--video-id-from", default="stem", metavar="stem|path|hash",
                   help="how a video is named in the store: stem (file name without extension, default), "
                        "path (path below the folder given, folders joined by '__') or hash (16 hex digits "
                        "of its sha256); annotations name videos by this id")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="clips per device batch, packed across videos (default: 64 on CUDA, 16 on CPU)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="decoding worker processes; 0 decodes in the main process (default: CPUs - 1, at least 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads of this process (default: every core on CPU; 4 on CUDA, which leaves "
                        "the cores to the decoding workers)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process only shard I of N (0-based); the --queries text stores are written by "
                        "shard 0 only")
    p.add_argument("--overwrite", action="store_true", help="recompute videos that are already stored")
    p.add_argument("--random-weights", action="store_true",
                   help="random encoders with a fixed seed, no download (tests and benchmarks)")
    p.add_argument("--weights", action="append", default=[], metavar="STREAM=ID|PATH",
                   help="weights of one encoder (e.g. clip=/models/ViT-B-32.pt), also used by its text "
                        f"stream ({', '.join(TEXT_STREAM_OF.values())}) unless STREAM_text= is given; "
                        "repeatable")
    p.add_argument("--encoder-size", choices=("full", "tiny"), default="full",
                   help="full or tiny (default: full); tiny builds reduced random encoders (with --random-weights): "
                        "fast offline features for tests and the README tour, which train and predict follow")
    p.add_argument("--precision", choices=("official", "fast"), default="official",
                   help="on CUDA: 'official' computes as the released features were (CLIP fp16 weights, "
                        "SlowFast fp32); 'fast' runs both under fp16 autocast (default: official)")
    p.add_argument("--clip-len", type=float, default=2.0, metavar="S",
                   help="seconds per clip (default: 2.0, the official grid; Charades-STA's released features use 1): "
                        "CLIP at fps 1/S, SlowFast clips of S*30 frames, InternVideo2 windows of S seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = p.add_argument_group("on a Ray cluster (docs/cluster.md; needs: pip install 'mrhd[ray]')")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="decode in Ray tasks and encode in Ray actors: 'auto' or HOST:PORT or ray://HOST:PORT "
                          "joins a running cluster, no ADDRESS starts one on this machine; --num-workers is "
                          "then the number of videos decoding at once (default: the cluster's free CPUs)")
    ray.add_argument("--ray-actors", type=int, default=None, metavar="N",
                     help="actors per encoder (default: one per GPU with --device cuda, 1 on the CPU)")
    ray.add_argument("--ray-gpus-per-actor", type=float, default=None, metavar="G",
                     help="GPU share of each actor (default: 1 / number of encoders, so a GPU holds one "
                          "actor of each)")
    ray.add_argument("--ray-cpus-per-actor", type=float, default=None, metavar="C",
                     help="CPUs of each actor, and its torch threads on the CPU (default: 1)")


def _parse_weights(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise MrhdError(f"--weights {item!r} is not STREAM=ID|PATH (e.g. clip=ViT-B-32.pt)")
        out[name.strip()] = value.strip()
    return out


def _check_clip_len(clip_len: float, names: list[str]) -> None:
    """--clip-len: positive; whole SlowFast clips at 30 fps; PANNs only at its 2-s chunks."""
    from mrhd.extract import sampling

    if not clip_len > 0:
        raise MrhdError(f"--clip-len must be a positive number of seconds, not {clip_len:g}")
    if "slowfast" in names:
        try:
            sampling.slowfast_block(sampling.SLOWFAST_FPS, clip_len)
        except ValueError as err:
            raise MrhdError(f"--clip-len {clip_len:g}: {err}") from None
    if "pann" in names and clip_len != sampling.CLIP_LEN:
        raise MrhdError(f"--clip-len {clip_len:g}: pann reads 2-s audio chunks only (every release uses them); "
                        "extract pann in a run of its own without --clip-len")


def run(args: argparse.Namespace) -> int:
    from mrhd.extract.cpu_sharing import main_process_threads, share_cores_with_decoders

    share_cores_with_decoders(args.device, gpu_too=True)  # before torch is first imported
    from mrhd.devices import parse_device
    from mrhd.encoders.factory import build_encoder
    from mrhd.extract.job import ExtractJob
    from mrhd.extract.sources import expand_inputs, parse_shard, shard
    from mrhd.extract.worker import DecodePool

    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    if not names:
        raise MrhdError("--encoders is empty; choose from: " + ", ".join(VIDEO_ENCODERS))
    for n in names:
        if n not in VIDEO_ENCODERS:
            raise MrhdError(f"unknown encoder {n!r}; choose from: {', '.join(VIDEO_ENCODERS)}")
    if args.encoder_size == "tiny" and not args.random_weights:
        raise MrhdError("--encoder-size tiny needs --random-weights (tiny encoders have no released weights)")
    if args.batch_size is not None and args.batch_size < 1:
        raise MrhdError("--batch-size must be at least 1")
    if args.num_workers is not None and args.num_workers < 0:
        raise MrhdError("--num-workers must be 0 or more")
    if args.threads is not None and args.threads < 1:
        raise MrhdError("--threads must be at least 1")
    if args.ray is None:
        parse_device(args.device)  # with --ray the GPUs are the cluster's, not this machine's
    elif args.device not in ("cpu", "cuda"):
        raise MrhdError(f"--device {args.device} with --ray: Ray gives each actor its own GPU; "
                        "use --device cuda or cpu")
    _check_clip_len(args.clip_len, names)
    index, count = parse_shard(args.shard)
    weights = _parse_weights(args.weights)
    known = set(names) | {TEXT_STREAM_OF[n] for n in names if n in TEXT_STREAM_OF}
    for stream in weights:
        if stream not in known:
            raise MrhdError(f"--weights {stream}=...: {stream!r} is not a stream of --encoders "
                            f"({', '.join(sorted(known))})")
    if not args.paths and not args.queries:
        raise MrhdError("give at least one PATH (video file, folder or .txt list), or --queries ANN.jsonl")
    for ann in args.queries:
        if not os.path.isfile(ann):
            raise MrhdError(f"--queries {ann}: file not found")

    if args.ray is not None and args.threads is not None:
        raise MrhdError("--threads sets this process's threads; with --ray give the actors theirs with "
                        "--ray-cpus-per-actor")
    if args.ray is None and (args.ray_actors, args.ray_gpus_per_actor, args.ray_cpus_per_actor) != (None,) * 3:
        raise MrhdError("--ray-actors, --ray-gpus-per-actor and --ray-cpus-per-actor need --ray")
    if args.ray not in (None, "local", "auto") and os.path.exists(args.ray):
        raise MrhdError(f"--ray {args.ray}: a path, not a cluster address; put --ray after the paths "
                        "(or write --ray local)")

    listing = expand_inputs(args.paths, id_from=args.video_id_from)
    sources = shard(listing.sources, index, count)
    queries = args.queries if index == 0 else []  # one shard writes the text stores

    cuda = args.device.startswith("cuda")
    batch_size = args.batch_size or (64 if cuda else 16)
    video_streams = list(dict.fromkeys(names))
    text_streams = [TEXT_STREAM_OF[n] for n in video_streams if n in TEXT_STREAM_OF] if args.queries else []
    # a text stream reads the checkpoint of its video encoder unless given its own
    weights_of = {n: weights.get(n) for n in video_streams} | {
        TEXT_STREAM_OF[n]: weights.get(TEXT_STREAM_OF[n]) or weights.get(n) for n in video_streams if n in TEXT_STREAM_OF}
    progress = not args.no_progress and sys.stderr.isatty()

    if args.ray is not None:
        from mrhd.extract.ray_job import cluster_job

        with cluster_job(None if args.ray == "local" else args.ray, video_streams, text_streams if queries else [],
                         args.out,
                         device=args.device, precision=args.precision, weights=weights_of,
                         random_weights=args.random_weights, size=args.encoder_size, batch_size=batch_size,
                         decode_at_once=args.num_workers, actors=args.ray_actors,
                         gpus_per_actor=args.ray_gpus_per_actor, cpus_per_actor=args.ray_cpus_per_actor,
                         overwrite=args.overwrite, progress=progress, clip_len=args.clip_len) as job:
            job.summary.add_bad_inputs(listing.problems)
            run_job(job, args, sources, queries)
        return _report(job, args, index, count)

    import torch

    torch.set_num_threads(main_process_threads(args.device, args.threads))
    num_workers = args.num_workers if args.num_workers is not None else max(1, (os.cpu_count() or 2) - 1)
    # decoding workers start now, so their imports overlap with loading the models
    pool = DecodePool(num_workers, ExtractJob.default_chunk(batch_size)).start() \
        if num_workers > 0 and sources else None

    def build(name):
        return build_encoder(name, device=args.device, weights=weights_of[name],
                             random_weights=args.random_weights, size=args.encoder_size)

    try:
        encoders = [build(n) for n in video_streams]
        for encoder in encoders:
            encoder.set_precision(args.precision)
        text_encoders = [build(n) for n in text_streams]
    except BaseException:
        if pool is not None:
            pool.stop()
        raise
    job = ExtractJob(encoders, args.out, text_encoders=text_encoders, batch_size=batch_size,
                     num_workers=num_workers, overwrite=args.overwrite, progress=progress, pool=pool,
                     clip_len=args.clip_len)
    job.summary.add_bad_inputs(listing.problems)
    run_job(job, args, sources, queries)
    return _report(job, args, index, count)


def run_job(job, args: argparse.Namespace, sources, queries: list[str]) -> None:
    """The videos, then the queries (one shard writes the text stores); SIGTERM and Ctrl-C print the
    summary so far and leave a store that the same command finishes."""
    from mrhd.extract.job import install_sigterm

    undo = install_sigterm()
    try:
        if args.paths:
            job.run_videos(sources)
        if queries:
            job.run_queries(queries)
    except KeyboardInterrupt:
        job.summary.interrupted = True
        print(job.summary.report(), file=sys.stderr)
        raise
    finally:
        undo()


def _report(job, args: argparse.Namespace, index: int, count: int) -> int:
    if args.queries and index != 0:
        job.summary.queries_note = f"queries not encoded: shard {index}/{count} leaves the text stores to shard 0"
    print(job.summary.report())
    return 0 if job.summary.ok else 1
