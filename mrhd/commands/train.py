"""Train a grounding model on features from the store.

Writes RUN_DIR/best.ckpt, last.ckpt, metrics.jsonl and best_val_preds.jsonl (and tensorboard/).
Defaults are each model's official optimiser, schedule, clipping and loss weights
(Moment-DETR's, plus configs/train/<model>.yaml where a model's authors changed them); --resume continues RUN_DIR/last.ckpt exactly where it stopped.
--dataset (configs/datasets/<name>.yaml: qvhighlights, charades_sta, tacos, tvsum) validates with
that benchmark's metrics and selects the best checkpoint as its authors do; with --data-dir, --train
and --val default to the dataset's split files in that folder (or name a split: --val test).
Option precedence: model YAML < the dataset's best_metric < the authors' recipe for that dataset
(configs/recipes/<dataset>/<model>.yaml) < flags and --set. A resumed run keeps the dataset (and
best_metric, unless --set gives one) of the run it continues. The clip length is the feature stores'
(their clip_len); one that disagrees with the annotations, --set or the resumed run is refused.
--out defaults to runs/<model>_<dataset>. Speed options are on by default; --exact gives the authors'
numbers bit for bit (docs/training-speed.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import yaml

from mrhd.errors import MrhdError
from mrhd.pipeline.dataset_configs import dataset_names

# TrainConfig fields --set may change (the rest have their own flags or are not options)
_NOT_SETTABLE = {"model", "model_config", "dataset"}


def _default(option: str) -> str:
    """``default: 32 (mesm: 12)``: the TrainConfig default and the models whose official setting
    (configs/train/<model>.yaml) differs, so --help shows what a run will use."""
    from mrhd.paths import config_dir
    from mrhd.training.config import TrainConfig

    base = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == option)
    changed = []
    for path in sorted((config_dir() / "train").glob("*.yaml")):
        value = (yaml.safe_load(path.read_text()) or {}).get(option)
        if value is not None and value != base:
            changed.append(f"{path.stem}: {value:g}" if isinstance(value, float) else f"{path.stem}: {value}")
    shown = f"{base:g}" if isinstance(base, float) else str(base)
    return f"default: {shown}" + (f"; {', '.join(changed)}" if changed else "") + ", as the authors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mrhd.features.profiles import available_profiles
    from mrhd.models.registry import available_models

    p.add_argument("--model", required=True, metavar="NAME",
                   help=f"the model to train: {', '.join(available_models())}")
    p.add_argument("--features", required=True, metavar="DIR", help="folder of <stream>.h5 stores")
    p.add_argument("--train", default=None, metavar="ANN.jsonl",
                   help="training annotations (default with --data-dir: the dataset's train split)")
    p.add_argument("--val", default=None, metavar="ANN.jsonl",
                   help="validation annotations (default with --data-dir: the dataset's validation split)")
    p.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run folder (default: runs/<model>_<dataset>)")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help=f"{', '.join(dataset_names())}: its metrics and model selection")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding the dataset's annotation files (needs --dataset)")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help=f"feature profile: {', '.join(available_profiles())} (default: the model's own)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help=f"training epochs ({_default('epochs')})")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"training lines per step ({_default('batch_size')})")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help=f"AdamW learning rate ({_default('lr')})")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help=f"seed of every random number generator ({_default('seed')})")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.ckpt")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="DataLoader workers (default: what fits the machine; 0 on CPU, official 4)")
    p.add_argument("--eval-every", type=int, default=None, metavar="N", help=f"evaluate every N epochs and after the last ({_default('eval_every')})")
    p.add_argument("--no-amp", action="store_true",
                   help="no mixed precision: float32 products on CUDA, and on CPUs with native bfloat16")
    p.add_argument("--exact", action="store_true",
                   help="the eager path equal to the authors' code bit for bit: no fused AdamW, fast dropout, "
                        "fast PReLU, length buckets, compile or autocast (docs/training-speed.md)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model config field or a training option, e.g. --set hidden_dim=128 "
                        "or --set best_metric=MR-full-R1@0.7 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise MrhdError(f"--set {pair!r}: expected FIELD=VALUE, e.g. --set hidden_dim=128")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _split_overrides(model: str, values: dict) -> tuple[dict, dict]:
    """--set values as (training options, model config fields). A name both configs have (UniVTG's
    clip_len) stays a model field, as before training options could be set."""
    from mrhd.training.config import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - _NOT_SETTABLE
    if not set(values) & train_fields:
        return {}, values
    from mrhd.models.registry import get_spec

    model_fields = {f.name for f in dataclasses.fields(get_spec(model).config_cls)}
    train = {k: v for k, v in values.items() if k in train_fields and k not in model_fields}
    return train, {k: v for k, v in values.items() if k not in train}


def _annotation_path(value: str | None, split: str, dataset, data_dir: str | None, flag: str) -> Path:
    """--train/--val: a file, or (with --dataset and --data-dir) a split name or the default split."""
    if value is not None and not (data_dir and dataset and value in dataset.splits):
        return Path(value)
    if data_dir is None:
        raise MrhdError(f"{flag} is required (or give --dataset NAME --data-dir DIR to use the dataset's "
                        f"{split} file)")
    split = value or split
    path = Path(data_dir) / dataset.split_file(split)
    if not path.is_file():
        raise MrhdError(f"--data-dir {data_dir} has no {path.name} (the {dataset.name} {split} split); "
                        f"put it there or pass {flag} FILE")
    return path


# libgomp's spin-wait for CPU training (set before torch loads; GOMP_SPINCOUNT or OMP_WAIT_POLICY in
# the environment win). A torch thread that reaches a barrier first spins 300,000 rounds by default;
# when other processes share the cores (more runnable threads than cores) that spin burns the time
# slice its partner needs to reach the barrier. QD-DETR at batch 32 with 2 threads on the 2-core
# development machine under a load average of 6-7 from other jobs: 43 s per step (13 s of CPU) with the
# default, 8.7 s (3.2 s of CPU) with 1,000 rounds (docs/training-speed.md). Numbers are unchanged.
OPENMP_SPIN_ROUNDS = 1000


def run(args: argparse.Namespace) -> int:
    from mrhd.extract.cpu_sharing import share_cores_with_decoders
    from mrhd.heap import keep_freed_memory

    share_cores_with_decoders(args.device, OPENMP_SPIN_ROUNDS)   # before torch is first imported
    if args.device.startswith("cpu"):
        keep_freed_memory()
    from mrhd.pipeline.dataset_configs import load_dataset_config
    from mrhd.training.config import load_train_config
    from mrhd.training.trainer import Trainer, stored_train_config

    if args.out is None:
        args.out = str(Path("runs") / f"{args.model}_{args.dataset or 'custom'}")
    train_options, model_config = _split_overrides(args.model, _overrides(args.set))
    stored = stored_train_config(args.out) if args.resume else {}
    dataset_name = args.dataset if args.dataset is not None else stored.get("dataset")
    if args.resume and stored and "best_metric" not in train_options and dataset_name == stored.get("dataset"):
        train_options["best_metric"] = stored.get("best_metric")   # the run's own model selection
    dataset = load_dataset_config(dataset_name) if dataset_name is not None else None
    if args.data_dir is not None:
        if dataset is None:
            raise MrhdError(f"--data-dir needs --dataset NAME ({', '.join(dataset_names())}) to know the file names")
        if not Path(args.data_dir).is_dir():
            raise MrhdError(f"--data-dir {args.data_dir} is not a folder; give the folder of the annotation files")
    train = _annotation_path(args.train, "train", dataset, args.data_dir, "--train")
    val = _annotation_path(args.val, dataset.validate_on if dataset else "val", dataset, args.data_dir, "--val")

    options = dict(
        profile=args.profile, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        device=args.device, seed=args.seed, num_workers=args.num_workers, eval_every=args.eval_every,
        amp=False if args.no_amp else None, progress=False if args.quiet else None,
        exact=True if args.exact else None, compile=True if args.compile else None,
        dataset=dataset_name, model_config=model_config or None)
    for key, value in train_options.items():   # a flag given explicitly wins over --set
        if options.get(key) is None:
            options[key] = value
    cfg = load_train_config(args.model, **options)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise MrhdError("--epochs and --batch-size must be at least 1")
    result = Trainer(cfg, args.features, train, val, args.out, resume=args.resume).run()
    print(json.dumps({"out": str(args.out), **result}, indent=1))
    return 0
