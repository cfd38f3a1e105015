"""Score a prediction file with the official metrics (QVHighlights by default).

Prints the brief block; --out writes brief and full blocks as JSON.
"""

from __future__ import annotations

import argparse

from mrhd.errors import MrhdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--submission", required=True, metavar="PRED.jsonl", help="predictions")
    p.add_argument("--gt", required=True, metavar="GT.jsonl", help="ground-truth annotations")
    p.add_argument("--out", default=None, metavar="METRICS.json", help="write all metrics as JSON")
    p.add_argument("--dataset", default="qvhighlights",
                   choices=["qvhighlights", "charades", "tacos", "tvsum", "youtube"],
                   help="metric family (default: qvhighlights)")
    p.add_argument("--strict", action="store_true", help="treat validation warnings as errors")


def run(args: argparse.Namespace) -> int:
    raise MrhdError("`mrhd eval` is not available in this build yet")
