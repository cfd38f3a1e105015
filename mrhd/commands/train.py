"""Train a grounding model on features from the store.

Writes RUN_DIR/best.ckpt, last.ckpt, metrics.jsonl and best_val_preds.jsonl (and tensorboard/).
Defaults are each model's official optimiser, schedule, clipping and loss weights
(configs/train/<model>.yaml); --resume continues RUN_DIR/last.ckpt exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json

import yaml

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
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 4)")
    p.add_argument("--eval-every", type=int, default=None, metavar="N", help="evaluate every N epochs")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model config field, e.g. --set hidden_dim=128 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise MrhdError(f"--set {pair!r}: expected FIELD=VALUE, e.g. --set hidden_dim=128")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    from mrhd.pipeline.train import Trainer
    from mrhd.pipeline.train_config import load_train_config

    cfg = load_train_config(
        args.model, profile=args.profile, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        device=args.device, seed=args.seed, num_workers=args.num_workers, eval_every=args.eval_every,
        amp=False if args.no_amp else None, progress=False if args.quiet else None,
        model_config=_overrides(args.set) or None)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise MrhdError("--epochs and --batch-size must be at least 1")
    result = Trainer(cfg, args.features, args.train, args.val, args.out, resume=args.resume).run()
    print(json.dumps({"out": str(args.out), **result}, indent=1))
    return 0
