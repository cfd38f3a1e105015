"""Our training step against the authors' own code, side by side, on the same data.

    .venv/bin/python benchmarks/vs_authors.py --authors-repo ~/src/QD-DETR --model qd_detr
    .venv/bin/python benchmarks/vs_authors.py --authors-repo ~/src/CGDETR --model cg_detr \\
        --learn --seeds 2018,2019,2020 --epochs 8
    .venv/bin/python benchmarks/vs_authors.py --authors-repo ~/src/QD-DETR --model qd_detr --levers

The authors' repository is a checkout you fetched yourself (wjun0830/QD-DETR, wjun0830/CGDETR,
jayleicn/moment_detr, mingyao1120/TR-DETR); nothing of it is copied here. It runs unmodified, with
runtime shims only: ``Tensor.cuda`` is a no-op on CPU (their code calls ``.cuda()``), their
``train()`` is replaced by a function that keeps what their ``start_training()`` built (options,
datasets, model, criterion, AdamW, StepLR) instead of running the loop, and modules their
utilities import but training never calls (pandas, sklearn; torchtext, which CG-DETR loads for
GloVe queries on Charades-STA) are stubbed when not installed (their option table, printed with
pandas, is then printed as plain lines).

Data: planted-moment features (mrhd.training.synthetic) with QVHighlights' clip and token counts,
written once as our HDF5 stores and once in the authors' layout (``slowfast_features/<vid>.npz``
``features``, ``clip_features/``, ``clip_text_features/qid<q>.npz`` ``last_hidden_state``) with
the same numbers (video stored as float16, as ``mrhd extract`` stores it).

Speed: each side is built in a child process of its own (official options, batch 32 unless
--batch-size), so that each runs with the process settings it has for real: the authors' with
libgomp's defaults, ours with the spin-wait and the heap setting ``mrhd train`` makes on CPU
(mrhd.commands.train.OPENMP_SPIN_ROUNDS, mrhd.heap; GOMP_SPINCOUNT or MALLOC_* in the environment
apply to both). The
two take single training steps in turns, the order flipping every pair, so that load drift on a
shared machine cancels. --in-process builds both in this process instead, with the same runtime
settings (ours): the difference of the code alone. Per step: data time (the next batch from the side's DataLoader), compute time
(their ``train_epoch`` body on that batch / our ``Trainer.train_step``), step time = both, and the
process CPU time of the step (user + system, all threads: less sensitive to other jobs taking the
cores, more to threads spinning while they wait). Printed: the median over pairs of authors/ours
for each, plus the raw medians and the load average.
Memory: each side alone in a child process (peak RSS on CPU, max_memory_allocated on CUDA).
--levers: our exact path (``exact=true``) against the same plus one speed option at a time.
--learn: per seed and side a child process trains --epochs epochs and evaluates after each on the
validation split (--emulate-native-bf16: our side's bfloat16 autocast as on a CPU with AVX512-BF16,
on one without, e.g. ``--ours-set cpu_amp=true --emulate-native-bf16``); predictions come from each
side's own post-processing, scored by the same official metrics (mrhd.pipeline.evaluate, equal to the authors' standalone_eval). The table shows
both learning curves side by side and the mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

# the authors' package, their official train.sh options beyond the common ones
PACKAGES = {"moment_detr": "moment_detr", "qd_detr": "qd_detr", "tr_detr": "tr_detr", "cg_detr": "cg_detr"}
OFFICIAL_EXTRA = {
    "moment_detr": [],
    "qd_detr": [],
    "tr_detr": ["--label_loss_coef", "4", "--VTC_loss_coef", "0.3", "--CTC_loss_coef", "0.5",
                "--lw_saliency", "1.0", "--lr_drop", "400"],
    "cg_detr": ["--enc_layers", "3", "--dec_layers", "3", "--t2v_layers", "2", "--moment_layers", "1",
                "--dummy_layers", "2", "--sent_layers", "1", "--max_v_l", "75", "--max_q_l", "32"],
}
# every option that changes numbers, off: the exact path spelled out, so that one can be turned on
EXACT = {"optimizer": "loop", "fast_dropout": False, "fast_prelu": False, "bucket_by_length": False, "compile": False,
         "amp": False, "cpu_amp": False}
REPORT = ("MR-full-mAP", "MR-full-R1@0.5", "MR-full-R1@0.7", "HL-min-VeryGood-Hit1")
# our speed options, each measured alone against the exact path by --levers
LEVERS = {
    "fused AdamW": {"optimizer": "fused"},
    "fast dropout": {"fast_dropout": True},
    "fast PReLU": {"fast_prelu": True},
    "autocast": {"amp": True, "cpu_amp": True},   # bfloat16 on CUDA and on CPUs with native bfloat16
    "length buckets": {"bucket_by_length": True},
    "torch.compile": {"compile": True},
}


# ---- data ------------------------------------------------------------------------------------
def make_data(root: Path, model: str, n_train: int, n_val: int, seed: int) -> dict:
    """Our stores + annotations, and the same arrays in the authors' npz layout."""
    from mrhd.features.profiles import load_profile
    from mrhd.features.store import FeatureStore
    from mrhd.models.registry import get_spec
    from mrhd.training.synthetic import make_synthetic, qvhighlights_like

    profile = load_profile(get_spec(model).default_profile)
    paths = make_synthetic(root / "ours", profile, qvhighlights_like(n_train=n_train, n_val=n_val, seed=seed))
    theirs = root / "authors"
    lines = [json.loads(x) for split in ("train", "val") for x in paths[split].read_text().splitlines()]
    for stream in profile.video:
        out = theirs / f"{stream}_features"
        out.mkdir(parents=True, exist_ok=True)
        store = FeatureStore(paths["features"] / f"{stream}.h5")
        for vid in sorted({ln["vid"] for ln in lines}):
            with h5_dataset(store, vid) as array:
                np.savez(out / f"{vid}.npz", features=array)
        store.close_reader()
    for stream in profile.text:
        out = theirs / f"{stream.removesuffix('_text')}_text_features"
        out.mkdir(parents=True, exist_ok=True)
        store = FeatureStore(paths["features"] / f"{stream}.h5")
        for ln in lines:
            np.savez(out / f"qid{ln['qid']}.npz", last_hidden_state=store.read_text(ln["qid"])[0])
        store.close_reader()
    return {**{k: str(v) for k, v in paths.items()}, "authors": str(theirs),
            "video_streams": list(profile.video)}


@contextlib.contextmanager
def h5_dataset(store, vid: str):
    """The array exactly as stored (float16), which the authors then cast to float32 as we do."""
    import h5py

    with h5py.File(store.path, "r") as f:
        yield f[vid][()]


# ---- the authors' side -----------------------------------------------------------------------
class _Stub(types.ModuleType):
    """A module their utilities import but training never uses; any use says so."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name} is not installed (stubbed by vs_authors.py)")
        return missing


def _stub_missing(names=("pandas", "sklearn", "sklearn.metrics", "torchtext")) -> None:
    for name in names:
        if name in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            sys.modules[name] = _Stub(name)


def _plain_option_table() -> None:
    """Their option printer (``utils.basic_utils.dict_to_markdown``) needs pandas + tabulate; without
    them it prints the options as plain lines (it only prints)."""
    if not isinstance(sys.modules.get("pandas"), _Stub):
        return
    basic = importlib.import_module("utils.basic_utils")
    basic.dict_to_markdown = lambda d, max_str_len=120: "\n".join(f"{k}: {v}" for k, v in d.items())


class _NullWriter:
    def add_scalar(self, *args, **kwargs):
        pass

    def add_text(self, *args, **kwargs):
        pass

    def close(self):
        pass


class Authors:
    """The authors' training set-up, built by their own ``start_training()``."""

    name = "authors"

    def __init__(self, repo: Path, model: str, data: dict, args, seed: int, epochs: int):
        import torch

        self.torch = torch
        self.device = args.device
        pkg = PACKAGES[model]
        repo = repo.resolve()
        if not (repo / pkg / "train.py").is_file():
            raise SystemExit(f"--authors-repo {repo} has no {pkg}/train.py; give a checkout of the "
                             f"{model} authors' repository")
        if not args.device.startswith("cuda"):
            torch.Tensor.cuda = lambda self, *a, **k: self   # their hard-coded .cuda() calls
        _stub_missing()
        sys.path.insert(0, str(repo))
        self.results = Path(tempfile.mkdtemp(prefix="authors-results-"))
        feats = Path(data["authors"])
        argv = ["--dset_name", "hl", "--ctx_mode", "video_tef", "--train_path", data["train"],
                "--eval_path", data["val"], "--eval_split_name", "val",
                "--v_feat_dirs", *[str(feats / f"{s}_features") for s in data["video_streams"]],
                "--v_feat_dim", "2816", "--t_feat_dir", str(feats / "clip_text_features") + "/",
                "--t_feat_dim", "512", "--bsz", str(args.batch_size), "--results_root", str(self.results),
                "--exp_id", "bench", "--device", "0" if args.device.startswith("cuda") else "-1",
                "--num_workers", str(args.authors_workers), "--seed", str(seed), "--n_epoch", str(epochs),
                *OFFICIAL_EXTRA[model]]
        if args.lr is not None:
            argv += ["--lr", str(args.lr)]
        cwd, old_argv = os.getcwd(), sys.argv
        built = {}
        try:
            os.chdir(repo)            # their option parser copies model files by relative path
            sys.argv = ["train.py", *argv]
            with contextlib.redirect_stdout(io.StringIO()):
                _plain_option_table()
                self.train_mod = importlib.import_module(f"{pkg}.train")
                self.inference = importlib.import_module(f"{pkg}.inference")
                dataset_mod = importlib.import_module(f"{pkg}.start_end_dataset")
                logging.getLogger().setLevel(logging.WARNING)
                logging.getLogger(f"{pkg}.inference").setLevel(logging.ERROR)   # "specify --resume"

                def keep(model, criterion, optimizer, lr_scheduler, train_dataset, val_dataset, opt):
                    built.update(model=model, criterion=criterion, optimizer=optimizer, scheduler=lr_scheduler,
                                 train_dataset=train_dataset, val_dataset=val_dataset, opt=opt)
                self.train_mod.train = keep
                self.train_mod.start_training()
        finally:
            os.chdir(cwd)
            sys.argv = old_argv
        self.__dict__.update(built)
        self.collate = dataset_mod.start_end_collate
        self.opt.train_log_txt_formatter = "{time_str} [Epoch] {epoch:03d} [Loss] {loss_str}\n"  # set by train()
        self.loader = torch.utils.data.DataLoader(
            self.train_dataset, collate_fn=self.collate, batch_size=self.opt.bsz,
            num_workers=self.opt.num_workers, shuffle=True, pin_memory=self.opt.pin_memory)
        self.epoch = 0

    def batches(self):
        """Batches as their ``train()`` draws them, epoch after epoch."""
        while True:
            yield from self.loader
            self.epoch += 1

    def step(self, batch) -> None:
        """Their ``train_epoch`` body on one batch (their loop, meters and host syncs included)."""
        self.train_mod.train_epoch(self.model, self.criterion, [batch], self.optimizer, self.opt,
                                   self.epoch, _NullWriter())

    def train_epoch(self) -> None:
        self.train_mod.train_epoch(self.model, self.criterion, self.loader, self.optimizer, self.opt,
                                   self.epoch, _NullWriter())
        self.scheduler.step()
        self.epoch += 1

    def predict(self) -> list[dict]:
        """Their compute_mr_results (their post-processing) on the validation split; the RNG states
        are kept, so evaluating every epoch leaves their training draws as they were."""
        torch = self.torch
        state = torch.get_rng_state()
        loader = torch.utils.data.DataLoader(self.val_dataset, collate_fn=self.collate,
                                             batch_size=self.opt.eval_bsz, num_workers=self.opt.num_workers,
                                             shuffle=False, pin_memory=self.opt.pin_memory)
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            lines, _ = self.inference.compute_mr_results(self.model, loader, self.opt)
        torch.set_rng_state(state)
        return lines


# ---- our side --------------------------------------------------------------------------------
class Ours:
    name = "ours"

    def __init__(self, model: str, data: dict, args, seed: int, epochs: int, settings: dict, out: Path):
        from mrhd.training.config import load_train_config
        from mrhd.training.trainer import Trainer

        options = {"batch_size": args.batch_size, "progress": False, "device": args.device, "seed": seed,
                   "epochs": epochs, "eval_every": 1, "lr": args.lr, **settings}
        self.cfg = load_train_config(model, **options)
        self.trainer = Trainer(self.cfg, data["features"], data["train"], data["val"], out, log=lambda m: None)

    def batches(self):
        while True:
            yield from self.trainer.epoch_batches()
            self.trainer.epoch += 1

    def step(self, batch) -> None:
        self.trainer.train_step(batch)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_step(side, batches, device: str) -> tuple[float, float, float]:
    """(data seconds, compute seconds, process CPU seconds) of one step."""
    _sync(device)
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    batch = next(batches)
    t1 = time.perf_counter()
    side.step(batch)
    _sync(device)
    return t1 - t0, time.perf_counter() - t1, _cpu_seconds() - c0


class Local:
    """A side built in this process: its steps run here."""

    def __init__(self, side, device: str):
        self.name, self.side, self.device = side.name, side, device
        self.batches = side.batches()

    def timed_step(self) -> tuple[float, float, float]:
        return timed_step(self.side, self.batches, self.device)

    def close(self) -> None:
        pass


class Remote:
    """A side built in a child process of its own, which takes one step per request: each side then
    runs with its own process settings, as it is run for real (the authors' ``train.py``: libgomp's
    defaults; ours: what ``mrhd train`` sets, mrhd.commands.train.OPENMP_SPIN_ROUNDS)."""

    def __init__(self, name: str, args, env: dict):
        self.name = name
        cmd = [*_child_cmd(args), "--_stepper", name]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            raise SystemExit(f"the {name} side failed to start (its error is above)")

    def timed_step(self) -> tuple[float, float, float]:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return tuple(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def stepper_child(args, data: dict, side: str) -> None:
    """Build one side, then take a timed step for every ``step`` line on stdin (JSON line back)."""
    import torch

    torch.set_num_threads(args.threads)
    run = Local(make_side(side, args, data, seed=2018, epochs=1000), args.device)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr            # their code prints; only our answers go to the parent
    print("ready", file=real_stdout, flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            print(json.dumps(run.timed_step()), file=real_stdout, flush=True)


def side_envs() -> dict[str, dict]:
    """Process environments: the authors' as given; ours with the spin-wait ``mrhd train`` sets."""
    from mrhd.commands.train import OPENMP_SPIN_ROUNDS

    ours = dict(os.environ)
    if "GOMP_SPINCOUNT" not in ours and "OMP_WAIT_POLICY" not in ours:
        ours["GOMP_SPINCOUNT"] = str(OPENMP_SPIN_ROUNDS)
    return {"authors": dict(os.environ), "ours": ours}


def alternate(a, b, pairs: int, warmup: int) -> list[tuple]:
    """Single steps in turns (a b, b a, a b, ...); per pair ((a data, a compute, a cpu), (b ...))."""
    for _ in range(warmup):
        for side in (a, b):
            side.timed_step()
    rows = []
    for i in range(pairs):
        got = {}
        for side in ((a, b) if i % 2 == 0 else (b, a)):
            got[side.name] = side.timed_step()
        rows.append((got[a.name], got[b.name]))
    return rows


def summarize(rows: list[tuple], label_a: str, label_b: str) -> dict:
    def med(xs):
        return statistics.median(xs)

    out = {}
    for name, pick in (("step", lambda r: r[0] + r[1]), ("compute", lambda r: r[1]), ("data", lambda r: r[0]),
                       ("cpu", lambda r: r[2])):
        a = [pick(r[0]) for r in rows]
        b = [pick(r[1]) for r in rows]
        ratios = [x / y for x, y in zip(a, b) if y > 0]
        out[name] = {label_a: med(a), label_b: med(b), "ratio": med(ratios) if ratios else float("nan"),
                     "ratio_q1_q3": (float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75)))
                     if ratios else None}
    return out


def print_speed(title: str, summary: dict, label_a: str, label_b: str, pairs: int) -> None:
    load = os.getloadavg()
    print(f"{title}  ({pairs} pairs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)
    for name in ("step", "compute", "data", "cpu"):
        s = summary[name]
        q1, q3 = s["ratio_q1_q3"] or (float("nan"), float("nan"))
        print(f"  {name:8s} {label_a} {s[label_a] * 1e3:9.1f} ms   {label_b} {s[label_b] * 1e3:9.1f} ms   "
              f"median ratio {label_a}/{label_b} {s['ratio']:5.2f}  (quartiles {q1:.2f}-{q3:.2f})", flush=True)


# ---- child processes -------------------------------------------------------------------------
def _child_cmd(args) -> list[str]:
    cmd = [sys.executable, __file__, "--authors-repo", str(args.authors_repo), "--model", args.model,
           "--device", args.device, "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--authors-workers", str(args.authors_workers), "--data", args.data]
    if args.lr is not None:
        cmd += ["--lr", str(args.lr)]
    for pair in args.ours_set:
        cmd += ["--ours-set", pair]
    if args.emulate_native_bf16:
        cmd += ["--emulate-native-bf16"]
    return cmd


def _child(args, extra: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run([*_child_cmd(args), *extra], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"child {' '.join(extra)} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_child(args, data: dict, side: str) -> dict:
    """Peak memory of one side alone: RSS of the whole process (CPU) or the CUDA allocator's peak."""
    import torch

    torch.set_num_threads(args.threads)
    run = make_side(side, args, data, seed=2018, epochs=1000)
    batches = run.batches()
    timed_step(run, batches, args.device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.memory_steps):
        timed_step(run, batches, args.device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_MiB": peak / 1024, "rss_growth_MiB": (peak - rss0) / 1024}
    if args.device.startswith("cuda"):
        out["cuda_peak_MiB"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def learn_child(args, data: dict, side: str, seed: int) -> dict:
    """Train --epochs epochs, evaluating on val after each; returns the per-epoch metrics."""
    import torch

    from mrhd.pipeline.evaluate import evaluate_qvhighlights

    torch.set_num_threads(args.threads)
    gt = [json.loads(x) for x in Path(data["val"]).read_text().splitlines()]
    curve = []
    t0 = time.perf_counter()
    if side == "authors":
        run = Authors(args.authors_repo, args.model, data, args, seed, args.epochs)
        for _ in range(args.epochs):
            run.train_epoch()
            brief = evaluate_qvhighlights(run.predict(), gt)["brief"]
            curve.append({"epoch": run.epoch, **{k: brief[k] for k in REPORT}})
    else:
        out = Path(tempfile.mkdtemp(prefix="ours-run-"))
        products = contextlib.nullcontext()
        if args.emulate_native_bf16:   # bfloat16 autocast as on a CPU with AVX512-BF16 (benchmarks/native_bf16.py)
            from native_bf16 import NativeBFloat16Products

            from mrhd.training import speed

            speed.cpu_has_native_bfloat16 = lambda: True
            products = NativeBFloat16Products()
        run = Ours(args.model, data, args, seed, args.epochs, ours_settings(args), out / "run")
        with products:
            run.trainer.run()
        for line in (out / "run" / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            curve.append({"epoch": row["epoch"], **{k: row[k] for k in REPORT}})
    return {"side": side, "seed": seed, "curve": curve, "seconds": time.perf_counter() - t0}


def ours_settings(args) -> dict:
    import yaml

    out = {}
    for pair in args.ours_set:
        key, _, value = pair.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def our_plan(args) -> str:
    """The speed options our side runs with (as its Trainer resolves them) and the CPU's kind."""
    import torch

    from mrhd.training.config import load_train_config
    from mrhd.training.speed import cpu_has_native_bfloat16, plan_speed

    cfg = load_train_config(args.model, batch_size=args.batch_size, device=args.device, **ours_settings(args))
    cpu = (f"; CPU {torch.backends.cpu.get_cpu_capability()}, native bfloat16 "
           f"{'yes' if cpu_has_native_bfloat16() else 'no'}") if args.device == "cpu" else ""
    return plan_speed(cfg, torch.device(args.device)).describe() + cpu


def make_side(side: str, args, data: dict, seed: int, epochs: int, settings: dict | None = None):
    if side == "authors":
        return Authors(args.authors_repo, args.model, data, args, seed, epochs)
    out = Path(tempfile.mkdtemp(prefix="ours-run-")) / "run"
    return Ours(args.model, data, args, seed, epochs, ours_settings(args) if settings is None else settings, out)


def print_learning(results: list[dict]) -> None:
    seeds = sorted({r["seed"] for r in results})
    by = {(r["side"], r["seed"]): r for r in results}
    key = REPORT[0]
    print(f"\nlearning curves: {key} on the validation split after each epoch (authors | ours)", flush=True)
    epochs = max(len(r["curve"]) for r in results)
    print("epoch  " + "  ".join(f"seed {s:<4d} authors   ours" for s in seeds))
    for e in range(epochs):
        cells = []
        for s in seeds:
            a = by.get(("authors", s), {}).get("curve", [])
            o = by.get(("ours", s), {}).get("curve", [])
            fa = f"{a[e][key]:7.2f}" if e < len(a) else "      -"
            fo = f"{o[e][key]:7.2f}" if e < len(o) else "      -"
            cells.append(f"          {fa} {fo}")
        print(f"{e + 1:5d}  " + "  ".join(cells))
    print("\nafter the last epoch, mean +- std over seeds " + ", ".join(map(str, seeds)) + ":")
    for k in REPORT:
        row = []
        for side in ("authors", "ours"):
            vals = [by[(side, s)]["curve"][-1][k] for s in seeds if (side, s) in by]
            if not vals:
                continue
            row.append(f"{side} {np.mean(vals):6.2f} +- {np.std(vals):5.2f}")
        print(f"  {k:22s} " + "   ".join(row))
    for side in ("authors", "ours"):
        secs = [by[(side, s)]["seconds"] for s in seeds if (side, s) in by]
        if secs:
            print(f"  {side:8s} wall time per run (training + evaluation): {np.mean(secs):7.1f} s")


# ---- main ------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--authors-repo", required=True, type=Path, help="checkout of the authors' repository")
    p.add_argument("--model", default="qd_detr", choices=sorted(PACKAGES))
    p.add_argument("--device", default="cpu", help="cpu or cuda (ours then uses its CUDA defaults: AMP)")
    p.add_argument("--batch-size", type=int, default=32, help="official: 32")
    p.add_argument("--lr", type=float, default=None, help="both sides (default: official 1e-4)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    p.add_argument("--pairs", type=int, default=20, help="alternating step pairs")
    p.add_argument("--warmup", type=int, default=3, help="steps per side before timing")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-val", type=int, default=128)
    p.add_argument("--authors-workers", type=int, default=0,
                   help="their DataLoader workers (official 4; 0 keeps their data loading in the timed step "
                        "instead of competing with it for the cores)")
    p.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training option of ours, e.g. exact=true (repeatable)")
    p.add_argument("--memory-steps", type=int, default=3)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--levers", action="store_true", help="measure each of our speed options alone")
    p.add_argument("--lever-names", default=",".join(k for k in LEVERS if k != "torch.compile"),
                   help="which levers (torch.compile takes minutes to compile on CPU; name it to include it)")
    p.add_argument("--skip-authors", action="store_true", help="only --levers / --learn")
    p.add_argument("--in-process", action="store_true",
                   help="both sides in this process, with the same runtime settings (the code alone)")
    p.add_argument("--learn", action="store_true", help="learning curves of both sides")
    p.add_argument("--seeds", default="2018,2019,2020")
    p.add_argument("--learn-sides", default="authors,ours", choices=("authors,ours", "authors", "ours"),
                   help="--learn: which sides train (e.g. ours alone with other --ours-set options)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--emulate-native-bf16", action="store_true",
                   help="--learn, our side: bfloat16 autocast computed as a CPU with AVX512-BF16 computes it, on "
                        "one without (benchmarks/native_bf16.py; numbers only, its step times mean nothing)")
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)        # children: data already made
    p.add_argument("--_memory", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_stepper", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_learn", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_seed", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")   # their loops draw progress bars; read when tqdm loads
    envs = side_envs()
    if not (args._stepper or args._memory or args._learn):
        # this process (levers, --in-process) runs with the spin-wait of `mrhd train`; the children
        # get their side's environment from envs. Set before torch (libgomp) loads.
        os.environ.update({k: v for k, v in envs["ours"].items() if k == "GOMP_SPINCOUNT"})
    child_side = args._stepper or args._memory or args._learn
    if args.device.startswith("cpu") and child_side in (None, "ours"):
        from mrhd.heap import keep_freed_memory

        keep_freed_memory()   # the heap setting of `mrhd train` on a CPU (this process: levers, --in-process)

    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*pin_memory.*")                  # their loader on CPU
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")   # their float(loss)
    torch.set_num_threads(args.threads)
    if args._stepper:
        stepper_child(args, json.loads(Path(args.data).read_text()), args._stepper)
        return 0
    if args._memory or args._learn:
        data = json.loads(Path(args.data).read_text())
        res = memory_child(args, data, args._memory) if args._memory else learn_child(args, data, args._learn, args._seed)
        print(json.dumps(res))
        return 0

    root = Path(tempfile.mkdtemp(prefix="vs-authors-"))
    data = make_data(root, args.model, args.n_train, args.n_val, seed=0)
    args.data = str(root / "data.json")
    Path(args.data).write_text(json.dumps(data))
    print(f"{args.model} on {args.device}, batch {args.batch_size}, {args.threads} threads, "
          f"{args.n_train} planted training samples (QVHighlights clip/token counts); torch {torch.__version__}"
          + ("; --learn: our bfloat16 products emulated as native (benchmarks/native_bf16.py)"
             if args.emulate_native_bf16 else ""), flush=True)

    if not args.skip_authors:
        if args.in_process:
            authors = Local(Authors(args.authors_repo, args.model, data, args, seed=2018, epochs=1000), args.device)
            ours_side = make_side("ours", args, data, seed=2018, epochs=1000)
            print(f"ours: {ours_side.trainer.speed.describe()}; both in one process, libgomp spin rounds "
                  f"{os.environ.get('GOMP_SPINCOUNT', 'default')}", flush=True)
            ours = Local(ours_side, args.device)
        else:
            authors, ours = Remote("authors", args, envs["authors"]), Remote("ours", args, envs["ours"])
            spin = {k: e.get("GOMP_SPINCOUNT", "default") for k, e in envs.items()}
            print(f"each side in its own process; libgomp spin rounds: authors {spin['authors']}, "
                  f"ours {spin['ours']}; ours keeps freed memory in glibc's heap (mrhd.heap)", flush=True)
            print(f"ours: {our_plan(args)}", flush=True)
        rows = alternate(authors, ours, args.pairs, args.warmup)
        authors.close()
        ours.close()
        summary = summarize(rows, "authors", "ours")
        print_speed("speed: authors vs ours (defaults" + (f", {' '.join(args.ours_set)}" if args.ours_set else "")
                    + ("; one process" if args.in_process else "") + ")", summary, "authors", "ours", args.pairs)
        del authors, ours

    if not args.no_memory and not args.skip_authors:
        mem = {side: _child(args, ["--_memory", side, "--memory-steps", str(args.memory_steps)], envs[side])
               for side in ("authors", "ours")}
        key = "cuda_peak_MiB" if args.device.startswith("cuda") else "peak_rss_MiB"
        print(f"  memory   authors {mem['authors'][key]:9.1f} MiB   ours {mem['ours'][key]:9.1f} MiB   "
              f"ratio authors/ours {mem['authors'][key] / mem['ours'][key]:5.2f}  ({key}; growth over "
              f"{args.memory_steps} steps: authors {mem['authors']['rss_growth_MiB']:.1f}, "
              f"ours {mem['ours']['rss_growth_MiB']:.1f} MiB)", flush=True)

    if args.levers:
        from mrhd.training.config import load_train_config

        defaults = load_train_config(args.model)
        for name in args.lever_names.split(","):
            change = LEVERS[name]
            base = make_side("ours", args, data, seed=2018, epochs=1000, settings=dict(EXACT))
            base.name = "exact"
            lever = make_side("ours", args, data, seed=2018, epochs=1000, settings={**EXACT, **change})
            lever.name = "lever"
            s = summarize(alternate(Local(base, args.device), Local(lever, args.device), args.pairs, args.warmup),
                          "exact", "lever")
            default = all(getattr(defaults, k) == v for k, v in change.items())
            print_speed(f"lever {name} ({', '.join(f'{k}={v}' for k, v in change.items())}; "
                        f"{'on' if default else 'off'} by default for {args.model}) vs the exact path",
                        s, "exact", "lever", args.pairs)
            del base, lever

    if args.learn:
        results = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            for side in args.learn_sides.split(","):
                results.append(_child(args, ["--_learn", side, "--_seed", str(seed), "--epochs", str(args.epochs),
                                             "--n-train", str(args.n_train)], envs[side]))
                r = results[-1]
                print(f"  learned: {side} seed {seed}: {REPORT[0]} {r['curve'][-1][REPORT[0]]:.2f} after "
                      f"{len(r['curve'])} epochs ({r['seconds']:.0f} s)", flush=True)
        print_learning(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
