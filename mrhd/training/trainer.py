"""Training loop of every model with a training path, generic over the ModelSpec.

Follows the official train loops (jayleicn/moment_detr ``moment_detr/train.py``; QD-DETR, TR-DETR,
CG-DETR, VideoLights, UniVTG copy it): seed everything, shuffle the training set each epoch,
``loss = sum(loss_dict[k] * weight_dict[k])``, zero_grad / backward / clip_grad_norm_(grad_clip) /
step, the LR scheduler stepped once per epoch, evaluation every ``eval_every`` epochs with the
official metrics, best checkpoint by ``best_metric`` (MR-full-mAP), early stop after ``max_es_cnt``
evaluations without improvement. Additions: mixed precision on CUDA, an evaluation after the last
epoch, a first evaluation always saved as best (upstream starts from a best score of 0), and
resumable ``last.ckpt`` files that carry optimizer, scheduler, scaler and every RNG state, so a
resumed run continues exactly as an uninterrupted one.

Speed (:mod:`.speed`, docs/training-speed.md): fused AdamW, cheaper dropout masks on CPU,
length-bucketed batches and bfloat16 autocast on CUDA by default (``exact=True``: the bit-exact eager
path); features kept in RAM after their first read; the loss is read back to the host every step
on CPU (free there) but only every ``check_every`` steps on CUDA, so the GPU is not stalled.

Generic hooks a model opts into: annotation fields among ``ModelSpec.forward_inputs``
(``vid``, ``qid``, ``query``) reach forward() (:func:`mrhd.pipeline.datasets.meta_inputs`; the
query text goes to the training set only, as it feeds training targets such as MESM's FW-MESM);
a criterion with an ``epoch`` attribute gets the 0-based epoch before each training epoch
(VideoLights' hard pos/neg losses grow with it: dpaul06/VideoLights ``video_lights/train.py``
calls ``criterion(outputs, targets, epoch_i)`` with the 0-based epoch).

Datasets: ``TrainConfig.dataset`` names configs/datasets/<name>.yaml (:mod:`.dataset_configs`):
validation then uses that dataset's metric family (Charades-STA/TACoS: R1@IoU and mIoU; TVSum:
top-5 mAP), the profile takes its clip/token caps, and a model config with a ``dset_name`` field
(CG-DETR, TR-DETR) gets the authors' name unless ``--set`` gives one. A resumed run must name the
same dataset as the run it continues (stored in the checkpoints' ``train_config``).

Outputs in RUN_DIR: best.ckpt, last.ckpt, metrics.jsonl, best_val_preds.jsonl, tensorboard/.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mrhd.annotations import load_annotations
from mrhd.devices import parse_device
from mrhd.errors import MrhdError
from mrhd.features.clip_length import check_against_annotations, stores_clip_len
from mrhd.features.profiles import MemoryBudget, fit_to_stores, load_profile, open_stores, video_streams
from mrhd.io import json_safe, jsonl_text, write_atomic
from mrhd.models.registry import get_spec, make_config
from mrhd.pipeline.collate import collate, prepare_batch
from mrhd.pipeline.dataset_configs import load_dataset_config
from mrhd.pipeline.datasets import DatasetConfig, MomentDataset, meta_inputs
from mrhd.training.buckets import LengthBucketSampler, item_lengths
from mrhd.training.config import TrainConfig, load_recipe, model_defaults
from mrhd.training.fast_dropout import use_fast_dropout
from mrhd.training.fast_prelu import use_fast_prelu
from mrhd.training.optim import build_optimizer, build_scheduler
from mrhd.training.speed import plan_speed
from mrhd.training.validation import (
    check_best_metric,
    evaluate_lines,
    forward_kwargs,
    predict_loader,
    scorable,
    selection_score,
    to_float32,
)
from mrhd.weights.checkpoint import load_checkpoint, save_checkpoint


def set_seed(seed: int) -> None:
    """As the official ``set_seed``: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def rng_state() -> dict:
    """Every RNG the loop draws from, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def stored_train_config(out: str | Path) -> dict:
    """The ``train_config`` a run folder's last.ckpt was written with ({} where there is none).
    Its ``dataset`` is None for QVHighlights and for runs from before datasets were recorded."""
    last = Path(out) / "last.ckpt"
    return dict(load_checkpoint(last).get("train_config") or {}) if last.is_file() else {}


class Trainer:
    """One training run: data, model, optimiser and the run folder."""

    def __init__(self, cfg: TrainConfig, features: str | Path, train: str | Path, val: str | Path,
                 out: str | Path, resume: bool = False, log=None):
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.device = parse_device(cfg.device)
        self.speed = plan_speed(cfg, self.device)
        self.spec = get_spec(cfg.model)
        if self.spec.build_criterion is None:
            raise MrhdError(f"model {cfg.model!r} has no training path (no criterion); choose another --model")
        self.dataset = load_dataset_config(cfg.dataset) if cfg.dataset else None
        self.family = self.dataset.metrics if self.dataset else "qvhighlights"
        self._check_run_dir()
        self.profile = load_profile(cfg.profile or self.spec.default_profile)
        if self.dataset:
            self.profile = self.dataset.apply_to_profile(self.profile)
        caps = load_recipe(cfg.model, cfg.dataset).caps   # the authors' caps on this benchmark
        if caps:
            self.profile = self.profile.replace(**{k: (None if v == -1 else v) for k, v in caps.items()})
        self.stores = open_stores(features, self.profile)
        self.profile = fit_to_stores(self.profile, self.stores)   # recorded in the checkpoints, for predict
        if not self.profile.official_encoders:
            self.log(f"note: {features} holds features of {self.profile.encoders_text()}: the model learns only "
                     "what those features carry (a pipeline check, not a model for real videos)")
        if self.speed.cache_features:
            budget = MemoryBudget()
            for reader in self.stores.values():
                reader.keep_in_memory(budget)
        train_lines, val_all = load_annotations(train), load_annotations(val)
        self._take_clip_len(features, train_lines, train)
        labels = cfg.labels or cfg.model
        wanted = meta_inputs(self.spec.forward_inputs)
        dcfg = DatasetConfig(labels=labels, clip_len=cfg.clip_len, max_windows=cfg.max_windows, inputs=wanted)
        self.train_set = MomentDataset(train_lines, self.stores, self.profile, dcfg, name=f"--train {train}")
        val_lines = scorable(val_all, self.family)
        if not val_lines:
            what = "labels" if self.family in ("tvsum", "youtube") else "windows"
            raise MrhdError(f"--val {val} has no line with ground-truth {what} for the {self.family} metrics; "
                            "give an annotated split of that dataset")
        self.val_set = MomentDataset(val_lines, self.stores, self.profile,
                                     dataclasses.replace(dcfg, load_labels=False,
                                                         inputs=tuple(k for k in wanted if k != "query")),
                                     name=f"--val {val}")
        check_best_metric(cfg.best_metric, self.val_set.data, self.family, cfg.clip_len)
        for ds in (self.train_set, self.val_set):
            self.log(ds.summary())
            for qid, vid, why in ds.skipped[:20]:
                self.log(f"  skipped qid {qid} (video {vid}): {why}")
            if len(ds.skipped) > 20:
                self.log(f"  ... and {len(ds.skipped) - 20} more")

        set_seed(cfg.seed)
        self.model_cfg = self._model_config()
        self.model = self.spec.build(self.model_cfg).to(self.device)
        if self.speed.fast_dropout:
            use_fast_dropout(self.model)
        if self.speed.fast_prelu:
            use_fast_prelu(self.model)
        self.criterion = self.spec.build_criterion(self.model_cfg).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg, self.speed.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.amp_dtype = self.speed.amp_dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        # the training forward: compiled on request; evaluation and checkpoints use the module itself
        self.forward = torch.compile(self.model) if self.speed.compile else self.model
        self.train_loader = self._loader(self.train_set, train=True)
        self.val_loader = self._loader(self.val_set, train=False)
        self.epoch = 0
        self.best_score = -math.inf
        self.es_cnt = 0
        self.step_losses: list[float] = []   # total loss of every optimiser step of this process
        self._pending: list[torch.Tensor] = []   # losses not yet read back to the host
        self._bar = None
        self._tb = None

    # ---- setup -------------------------------------------------------------------------------
    def _loader(self, dataset: MomentDataset, train: bool) -> DataLoader:
        workers = self.speed.num_workers
        common = dict(collate_fn=collate, num_workers=workers, pin_memory=self.device.type == "cuda",
                      persistent_workers=workers > 0)
        if not train:
            return DataLoader(dataset, batch_size=self.cfg.eval_batch_size, shuffle=False, **common)
        if self.speed.bucket_by_length:
            lengths = item_lengths(dataset.data, self.cfg.clip_len, self.profile.max_v_l, self.profile.max_q_l)
            return DataLoader(dataset, batch_sampler=LengthBucketSampler(lengths, self.cfg.batch_size), **common)
        return DataLoader(dataset, batch_size=self.cfg.batch_size, shuffle=True, **common)

    def _check_run_dir(self) -> None:
        last = self.out / "last.ckpt"
        if self.resume and not last.is_file():
            raise MrhdError(f"--resume: {last} not found; start without --resume or point --out at a run")
        if not self.resume and last.is_file():
            raise MrhdError(f"{self.out} already holds a run (last.ckpt); pass --resume to continue it "
                            "or choose another --out")
        if self.resume:
            trained_on = stored_train_config(self.out).get("dataset")
            if trained_on != self.cfg.dataset:
                fix = f"--dataset {trained_on} (or no --dataset)" if trained_on else "no --dataset"
                raise MrhdError(f"{last} was trained on dataset {trained_on or 'none (QVHighlights metrics)'}, "
                                f"not {self.cfg.dataset or 'none'}; resume with {fix}")

    def _take_clip_len(self, features, train_lines: list[dict], train) -> None:
        """The clip length is the video stores' (features/clip_length.py): a --set clip_len, a resumed
        run or annotation durations that disagree with it are refused."""
        store_clip = stores_clip_len(self.stores, video_streams(self.profile, self.stores))
        if self.cfg.clip_len is not None and not math.isclose(float(self.cfg.clip_len), store_clip):
            raise MrhdError(f"clip_len {self.cfg.clip_len:g} disagrees with the {store_clip:g}-s clips of the "
                            f"stores in {features}; drop --set clip_len or use other --features")
        if self.resume:
            trained = stored_train_config(self.out).get("clip_len")
            if trained is not None and not math.isclose(float(trained), store_clip):
                raise MrhdError(f"{self.out / 'last.ckpt'} was trained on {float(trained):g}-s clips, but the "
                                f"stores in {features} have {store_clip:g}-s clips; resume on the same features")
        check_against_annotations(self.stores, video_streams(self.profile, self.stores), store_clip,
                                  train_lines, f"the durations in --train {train}")
        self.cfg.clip_len = store_clip
        clip_field = self._clip_field()
        given = {**model_defaults(self.cfg.model), **self.cfg.model_config}.get(clip_field)
        if given is not None and not math.isclose(float(given), store_clip):
            raise MrhdError(f"model config {clip_field}={given} (configs/models or --set) disagrees with the "
                            f"{store_clip:g}-s clips of the features; drop it or use other --features")

    def _clip_field(self) -> str | None:
        """The model config field holding the clip length (UniVTG: clip_len; the others: clip_length)."""
        fields = {f.name for f in dataclasses.fields(self.spec.config_cls)}
        return next((f for f in ("clip_length", "clip_len") if f in fields), None)

    def _model_config(self):
        fields = {f.name for f in dataclasses.fields(self.spec.config_cls)}
        values = model_defaults(self.cfg.model)
        dims = {"v_feat_dim": self.profile.video_dim, "t_feat_dim": self.profile.text_dim}
        if self.profile.audio and all(s in self.stores for s in self.profile.audio):
            dims["a_feat_dim"] = self.profile.audio_dim
        values.update({k: v for k, v in dims.items() if k in fields})
        if self.dataset and self.dataset.dset_name and "dset_name" in fields:
            values["dset_name"] = self.dataset.dset_name
        unknown = sorted(set(self.cfg.model_config) - fields)
        if unknown:
            raise MrhdError(f"model {self.cfg.model!r} has no config fields {unknown}")
        values.update(self.cfg.model_config)
        clip_field = self._clip_field()
        if clip_field is not None:   # the model's post-processing rounds to the features' clip length
            values[clip_field] = self.cfg.clip_len
        return make_config(self.cfg.model, {k: v for k, v in values.items() if k in fields})

    @property
    def tb(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:   # tensorboard is an optional extra (mrhd[train])
                self._tb = False
            else:
                self._tb = SummaryWriter(str(self.out / "tensorboard"))
        return self._tb or None

    # ---- one step / one epoch ----------------------------------------------------------------
    def loss(self, batched: dict) -> tuple[torch.Tensor, dict]:
        """Weighted total loss of a collated batch (official weighting) and the raw terms."""
        inputs, targets = prepare_batch(batched, self.device, non_blocking=self.device.type == "cuda")
        targets = dict(targets or {})
        targets.setdefault("src_txt_mask", inputs["src_txt_mask"])   # TR-DETR's alignment losses
        targets.setdefault("src_vid_mask", inputs["src_vid_mask"])
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.forward(**forward_kwargs(self.model, inputs, targets))
        loss_dict = self.criterion(to_float32(outputs), targets)
        weights = self.criterion.weight_dict
        total = sum(loss_dict[k] * weights[k] for k in loss_dict if k in weights)
        return total, loss_dict

    def train_step(self, batched: dict) -> torch.Tensor:
        """One optimiser step; returns the total loss (detached, on the device). The loss is checked
        for divergence when read back to the host (:meth:`sync_losses`: every step on CPU)."""
        total, _ = self.loss(batched)
        self.optimizer.zero_grad()
        self.scaler.scale(total).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        total = total.detach()
        self._pending.append(total)
        if len(self._pending) >= self.speed.check_every:
            self.sync_losses()
        return total

    def sync_losses(self) -> None:
        """Read the pending step losses back to the host (one sync), stop on a non-finite one."""
        if not self._pending:
            return
        values = torch.stack([t.reshape(()) for t in self._pending]).float().tolist()
        self._pending = []
        self.step_losses.extend(values)
        bad = next((v for v in values if not math.isfinite(v)), None)
        if bad is not None:
            raise MrhdError(f"training diverged (loss {bad}) at epoch {self.epoch + 1}; "
                            "lower --lr or check the features")
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{values[-1]:.4f}")

    def epoch_batches(self):
        """The collated batches of the current epoch, with the model and criterion in training mode."""
        self.model.train()
        self.criterion.train()
        if hasattr(self.criterion, "epoch"):   # epoch-dependent loss weights (VideoLights)
            self.criterion.epoch = self.epoch
        for _, batched in self.train_loader:
            yield batched

    def train_epoch(self) -> float:
        from tqdm import tqdm

        first = len(self.step_losses) + len(self._pending)
        self._bar = tqdm(total=len(self.train_loader), desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                         leave=False, disable=not self.cfg.progress, file=sys.stderr)
        try:
            for batched in self.epoch_batches():
                self.train_step(batched)
                self._bar.update()
            self.sync_losses()
        finally:
            self._bar.close()
            self._bar = None
        losses = self.step_losses[first:]
        return float(np.mean(losses)) if losses else float("nan")

    # ---- evaluation / checkpoints --------------------------------------------------------------
    def evaluate(self) -> tuple[dict, list[dict]]:
        """Predictions on --val and their metrics. The RNG states are restored afterwards, so how
        often one evaluates never changes the training run."""
        state = rng_state()
        try:
            lines = predict_loader(self.spec, self.model, self.model_cfg, self.val_loader, self.device)
        finally:
            set_rng_state(state)
        return evaluate_lines(lines, self.val_set.data, self.family), lines

    def _payload(self) -> dict:
        return {
            "model": self.cfg.model,
            "config": dataclasses.asdict(self.model_cfg),
            "state_dict": self.model.state_dict(),
            "profile": self.profile.name,
        }

    def save_last(self) -> None:
        save_checkpoint(self.out / "last.ckpt", **self._payload(), extra={
            "epoch": self.epoch, "train_config": self.cfg.to_dict(), "profile_spec": self.profile.to_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(),
            "best_score": self.best_score, "es_cnt": self.es_cnt,
        })

    def save_best(self, metrics: dict, lines: list[dict]) -> None:
        save_checkpoint(self.out / "best.ckpt", **self._payload(), extra={
            "epoch": self.epoch, "train_config": self.cfg.to_dict(), "profile_spec": self.profile.to_dict(),
            "metrics": json.loads(json.dumps(metrics["brief"])),
        })
        write_atomic(self.out / "best_val_preds.jsonl", jsonl_text(lines))

    def load_last(self) -> None:
        ckpt = load_checkpoint(self.out / "last.ckpt")
        if ckpt.get("model") != self.cfg.model:
            raise MrhdError(f"{self.out / 'last.ckpt'} is a checkpoint of model {ckpt.get('model')!r}, not "
                            f"{self.cfg.model!r}; use --model {ckpt.get('model')} or another --out")
        if ckpt.get("profile") != self.profile.name:
            raise MrhdError(f"{self.out / 'last.ckpt'} was trained on profile {ckpt.get('profile')!r}, not "
                            f"{self.profile.name!r}; pass --profile {ckpt.get('profile')}")
        missing, unexpected = self.model.load_state_dict(ckpt["state_dict"], strict=False)
        if missing or unexpected:
            raise MrhdError(f"{self.out / 'last.ckpt'} does not fit this {self.cfg.model} configuration "
                            f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
        except (KeyError, ValueError) as err:
            raise MrhdError(f"{self.out / 'last.ckpt'} has no usable optimizer state ({err}); "
                            "start a new run") from None
        self.epoch = int(ckpt["epoch"])
        self.best_score = float(ckpt["best_score"])
        self.es_cnt = int(ckpt["es_cnt"])
        set_rng_state(ckpt["rng"])

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm import tqdm

        try:
            self.out.mkdir(parents=True, exist_ok=True)   # only now: a failed setup leaves nothing behind
        except OSError as err:
            raise MrhdError(f"cannot create --out {self.out} ({err.strerror}); choose a writable folder") from None
        if self.resume:
            self.load_last()
            self.log(f"resumed {self.out / 'last.ckpt'} after epoch {self.epoch}")
        self.log(f"training {self.cfg.model} on {len(self.train_set)} lines "
                 f"(profile {self.profile.name}, device {self.device}; {self.speed.describe()})")
        last_metrics: dict = {}
        epochs = tqdm(range(self.epoch, self.cfg.epochs), desc="epochs", disable=not self.cfg.progress,
                      file=sys.stderr, initial=self.epoch, total=self.cfg.epochs)
        for _ in epochs:
            t0 = time.time()
            train_loss = self.train_epoch()
            self.scheduler.step()
            self.epoch += 1
            epochs.set_postfix(loss=f"{train_loss:.4f}")
            if self.tb:
                self.tb.add_scalar("Train/loss", train_loss, self.epoch)
                self.tb.add_scalar("Train/lr", float(self.optimizer.param_groups[0]["lr"]), self.epoch)
            stop = False
            if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
                metrics, lines = self.evaluate()
                brief = dict(metrics["brief"])
                last_metrics = brief
                score = selection_score(brief, self.cfg.best_metric)
                if math.isnan(score):
                    raise MrhdError(f"best_metric {self.cfg.best_metric!r} is undefined (NaN) on this validation "
                                    "set; choose another with --set best_metric=KEY")
                row = {"epoch": self.epoch, "train_loss": train_loss, "seconds": round(time.time() - t0, 2), **brief}
                with (self.out / "metrics.jsonl").open("a") as fh:
                    fh.write(json.dumps(json_safe(row)) + "\n")
                if self.tb:
                    for k, v in brief.items():
                        self.tb.add_scalar(f"Eval/{k}", float(v), self.epoch)
                if score > self.best_score:
                    self.best_score, self.es_cnt = score, 0
                    self.save_best(metrics, lines)
                else:
                    self.es_cnt += 1
                    stop = self.cfg.max_es_cnt != -1 and self.es_cnt > self.cfg.max_es_cnt
            self.save_last()
            if stop:
                self.log(f"early stop: no gain in {self.cfg.best_metric} for {self.es_cnt} evaluations")
                break
        epochs.close()
        if self.tb:
            self.tb.close()
        return {"epochs": self.epoch, "best_score": self.best_score, "last_metrics": json_safe(last_metrics)}
