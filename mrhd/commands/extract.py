"""Decode videos and write per-clip features of frozen encoders to one HDF5 store per stream.

PATH is a video file, a folder (searched recursively) or a .txt list of paths. Re-running skips
videos already stored; --overwrite recomputes them.
"""

from __future__ import annotations

import argparse

from mrhd.errors import MrhdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="video file, folder or .txt list of paths")
    p.add_argument("--encoders", default="clip,slowfast",
                   help="comma-separated: clip, slowfast, pann, blip2, internvideo2 (default: clip,slowfast)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the <stream>.h5 stores")
    p.add_argument("--queries", metavar="ANNOTATIONS.jsonl",
                   help="also encode every query of this annotation file with the matching text encoders")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per device batch")
    p.add_argument("--num-workers", type=int, default=None, help="decoding worker processes")
    p.add_argument("--shard", default=None, metavar="I/N", help="process only shard I of N (0-based)")
    p.add_argument("--overwrite", action="store_true", help="recompute videos that are already stored")
    p.add_argument("--random-weights", action="store_true",
                   help="random encoders with a fixed seed, no download (tests and benchmarks)")


def run(args: argparse.Namespace) -> int:
    raise MrhdError("`mrhd extract` is not available in this build yet")
