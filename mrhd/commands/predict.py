"""Find the moments of VIDEO that match each QUERY and its saliency curve (one score per 2-s clip).

Features are extracted once per video and cached in $MRHD_CACHE; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse

from mrhd.errors import MrhdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", metavar="VIDEO", help="video file")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="one or more sentences")
    p.add_argument("--model", default=None, help="model name (default: the best CLIP-only checkpoint)")
    p.add_argument("--weights", default=None, metavar="ID|PATH|random",
                   help="registry id, checkpoint file, or 'random' for an offline end-to-end run")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the predictions as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the saliency curve and top moments")
    p.add_argument("--top-k", type=int, default=5, help="moments to print per query (default: 5)")


def run(args: argparse.Namespace) -> int:
    raise MrhdError("`mrhd predict` is not available in this build yet")
