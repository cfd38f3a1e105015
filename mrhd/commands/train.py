"""Train a grounding model on features from the store.

Writes RUN_DIR/best.ckpt, last.ckpt, metrics.jsonl and best_val_preds.jsonl.
"""

from __future__ import annotations

import argparse

from mrhd.errors import MrhdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="moment_detr, qd_detr, tr_detr, cg_detr, univtg, ...")
    p.add_argument("--features", required=True, metavar="DIR", help="folder of <stream>.h5 stores")
    p.add_argument("--train", required=True, metavar="ANN.jsonl", help="training annotations")
    p.add_argument("--val", required=True, metavar="ANN.jsonl", help="validation annotations")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--profile", default=None, help="feature profile (default: the model's own)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.ckpt")


def run(args: argparse.Namespace) -> int:
    raise MrhdError("`mrhd train` is not available in this build yet")
