"""Loading the two released SlowFast R50 8x8 checkpoints into :class:`SlowFastR50`, with explicit
name tables (no pattern guessing at load time) and a strict check that every tensor arrives.

1. PySlowFast's Kinetics-400 release ``SLOWFAST_8x8_R50.pkl``: a Caffe2 pickle
   ``{'blobs': {name: ndarray}, ...}``. Names follow the Caffe2 video models, as
   facebookresearch/SlowFast slowfast/utils/c2_model_loading.py maps them: the slow pathway has no
   prefix, the fast pathway ``t_``; stems ``conv1_w`` / ``res_conv1_bn_*`` (``t_conv1_w`` /
   ``t_res_conv1_bn_*``); blocks ``res{stage}_{block}_branch2{a,b,c}_w`` and ``..._bn_{s,b,rm,riv}``,
   shortcut ``..._branch1_w`` / ``..._branch1_bn_*``; the fusions ``t_pool1_subsample_*`` (after the
   stem) and ``t_res{stage}_{last block}_branch2c_bn_subsample_*`` (after res2..res4); classifier
   ``pred_w`` / ``pred_b``. BN scale ``_s`` -> weight, ``_b`` -> bias, ``_rm`` / ``_riv`` -> running
   mean / var. Solver state (``*_momentum``, ``lr``, ``model_iter``) is skipped as
   slowfast/utils/checkpoint.py does.
2. pytorchvideo's ``slowfast_r50`` (``SLOWFAST_8x8_R50.pyth``, ``{'model_state': state_dict}``):
   ``blocks.0`` = stems (``multipathway_blocks.{0,1}.conv/norm``) + ``multipathway_fusion``
   (``conv_fast_to_slow``/``norm``), ``blocks.1..4`` = res2..res5
   (``multipathway_blocks.{p}.res_blocks.{i}.branch1_conv/branch1_norm`` and
   ``branch2.conv_{a,b,c}/norm_{a,b,c}``), fusions after res2..res4 in ``blocks.1..3``,
   ``blocks.6.proj`` = classifier (pytorchvideo/models/slowfast.py ``create_slowfast``, hub/slowfast.py).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from mrhd.encoders.slowfast import SlowFastConfig, SlowFastR50
from mrhd.errors import MrhdError
from mrhd.weights.checkpoint import load_checkpoint, unwrap_state_dict

_BN_CAFFE2 = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_BN_FIELDS = tuple(_BN_CAFFE2)


def _conv_bn(ours_conv: str, ours_bn: str, theirs_conv: str, theirs_bn, *, bn_sep: str = "_",
             caffe2: bool) -> dict[str, str]:
    """Our conv weight + four BN tensors -> their names (Caffe2 blob names or state-dict keys)."""
    if caffe2:
        table = {f"{ours_conv}.weight": f"{theirs_conv}_w"}
        table.update({f"{ours_bn}.{f}": f"{theirs_bn}{bn_sep}{_BN_CAFFE2[f]}" for f in _BN_FIELDS})
    else:
        table = {f"{ours_conv}.weight": f"{theirs_conv}.weight"}
        table.update({f"{ours_bn}.{f}": f"{theirs_bn}.{f}" for f in (*_BN_FIELDS, "num_batches_tracked")})
    return table


def caffe2_names(cfg: SlowFastConfig) -> dict[str, str]:
    """Our state-dict key -> Caffe2 blob name, for every tensor the pickle holds (BN's
    ``num_batches_tracked`` has no blob: it is not used in eval mode)."""
    t: dict[str, str] = {}
    for ours, pre in (("stem_slow", ""), ("stem_fast", "t_")):
        t.update(_conv_bn(f"{ours}.conv", f"{ours}.bn", f"{pre}conv1", f"{pre}res_conv1_bn", caffe2=True))
    for i in range(4):
        stage = i + 2   # res2 .. res5
        # fusion i sits after the stem (i = 0) or after the fast pathway's res{i+1}
        theirs = "t_pool1_subsample" if i == 0 else f"t_res{stage - 1}_{cfg.depths[i - 1] - 1}_branch2c_bn_subsample"
        t.update(_conv_bn(f"fusions.{i}.conv", f"fusions.{i}.bn", theirs, f"{theirs}_bn", caffe2=True))
        for ours_path, pre in (("slow_stages", ""), ("fast_stages", "t_")):
            for j in range(cfg.depths[i]):
                ours = f"{ours_path}.{i}.{j}"
                blk = f"{pre}res{stage}_{j}"
                for c in "abc":
                    t.update(_conv_bn(f"{ours}.conv_{c}", f"{ours}.bn_{c}", f"{blk}_branch2{c}",
                                      f"{blk}_branch2{c}_bn", caffe2=True))
                if j == 0:
                    t.update(_conv_bn(f"{ours}.shortcut", f"{ours}.shortcut_bn", f"{blk}_branch1",
                                      f"{blk}_branch1_bn", caffe2=True))
    t["classifier.weight"] = "pred_w"
    t["classifier.bias"] = "pred_b"
    return t


def pytorchvideo_names(cfg: SlowFastConfig) -> dict[str, str]:
    """Our state-dict key -> pytorchvideo ``slowfast_r50`` key (every tensor, BN counters included)."""
    t: dict[str, str] = {}
    for p, ours in enumerate(("stem_slow", "stem_fast")):
        b = f"blocks.0.multipathway_blocks.{p}"
        t.update(_conv_bn(f"{ours}.conv", f"{ours}.bn", f"{b}.conv", f"{b}.norm", caffe2=False))
    for i in range(4):
        f = f"blocks.{i}.multipathway_fusion"
        t.update(_conv_bn(f"fusions.{i}.conv", f"fusions.{i}.bn", f"{f}.conv_fast_to_slow", f"{f}.norm",
                          caffe2=False))
        for p, ours_path in enumerate(("slow_stages", "fast_stages")):
            for j in range(cfg.depths[i]):
                ours = f"{ours_path}.{i}.{j}"
                blk = f"blocks.{i + 1}.multipathway_blocks.{p}.res_blocks.{j}"
                for c in "abc":
                    t.update(_conv_bn(f"{ours}.conv_{c}", f"{ours}.bn_{c}", f"{blk}.branch2.conv_{c}",
                                      f"{blk}.branch2.norm_{c}", caffe2=False))
                if j == 0:
                    t.update(_conv_bn(f"{ours}.shortcut", f"{ours}.shortcut_bn", f"{blk}.branch1_conv",
                                      f"{blk}.branch1_norm", caffe2=False))
    head = 2 + len(cfg.depths)   # blocks.5 is the (parameter-free) pool-and-concat
    t["classifier.weight"] = f"blocks.{head}.proj.weight"
    t["classifier.bias"] = f"blocks.{head}.proj.bias"
    return t


def _is_solver_state(name: str) -> bool:
    # slowfast/utils/checkpoint.py load_checkpoint skips these silently
    return any(s in name for s in ("momentum", "lr", "model_iter"))


class _Caffe2Unpickler(pickle.Unpickler):
    """Only numpy arrays and plain containers: a .pkl from the internet must not run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("_codecs", "encode"),   # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a Caffe2 weights pickle")


def read_caffe2_blobs(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            obj = _Caffe2Unpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise MrhdError(f"cannot read {path} as a Caffe2 weights pickle ({err}); give PySlowFast's "
                        "SLOWFAST_8x8_R50.pkl or pytorchvideo's SLOWFAST_8x8_R50.pyth") from err
    blobs = obj.get("blobs") if isinstance(obj, dict) else None
    if not isinstance(blobs, dict):
        raise MrhdError(f"{path} has no 'blobs' table: not a PySlowFast Caffe2 checkpoint")
    return blobs


def state_dict_from_caffe2(blobs: dict, cfg: SlowFastConfig) -> dict[str, torch.Tensor]:
    """Blobs -> our state dict; raises on any missing, unknown or misshapen tensor."""
    names = caffe2_names(cfg)
    wanted = set(names.values())
    unexpected = sorted(k for k in blobs if k not in wanted and not _is_solver_state(k))
    missing = sorted(v for v in names.values() if v not in blobs)
    _check(missing, unexpected, "Caffe2 SLOWFAST_8x8_R50.pkl")
    return {ours: torch.from_numpy(np.array(blobs[theirs], dtype=np.float32)) for ours, theirs in names.items()}


def state_dict_from_pytorchvideo(sd: dict, cfg: SlowFastConfig) -> dict[str, torch.Tensor]:
    names = pytorchvideo_names(cfg)
    wanted = set(names.values())
    unexpected = sorted(k for k in sd if k not in wanted)
    missing = sorted(v for v in names.values() if v not in sd)
    _check(missing, unexpected, "pytorchvideo slowfast_r50")
    return {ours: sd[theirs] for ours, theirs in names.items()}


def _check(missing: list, unexpected: list, what: str) -> None:
    if missing or unexpected:
        raise MrhdError(f"not a {what} checkpoint: {len(missing)} missing (e.g. {missing[:2]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}) tensors")


def to_caffe2_blobs(model: SlowFastR50) -> dict[str, np.ndarray]:
    """Our weights as Caffe2 blobs (the inverse of :func:`state_dict_from_caffe2`)."""
    sd = model.state_dict()
    return {theirs: sd[ours].detach().cpu().numpy() for ours, theirs in caffe2_names(model.cfg).items()}


def to_pytorchvideo(model: SlowFastR50) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {theirs: sd[ours].clone() for ours, theirs in pytorchvideo_names(model.cfg).items()}


def _torch_state_dict(path: Path) -> dict:
    ckpt = load_checkpoint(path, what="SlowFast checkpoint",
                           fix="give pytorchvideo's SLOWFAST_8x8_R50.pyth or PySlowFast's SLOWFAST_8x8_R50.pkl")
    return unwrap_state_dict(ckpt, ("model_state",))


def load_slowfast(path: Path, cfg: SlowFastConfig) -> tuple[SlowFastR50, str]:
    """(model in eval mode with the file's weights, "caffe2" | "pytorchvideo"); the format is read
    from the file, not its name."""
    path = Path(path)
    model = SlowFastR50(cfg)
    if zipfile.is_zipfile(path):   # torch.save archive: pytorchvideo / PySlowFast .pyth
        sd, fmt = state_dict_from_pytorchvideo(_torch_state_dict(path), cfg), "pytorchvideo"
    else:
        try:
            blobs = read_caffe2_blobs(path)
        except MrhdError:
            try:   # a torch.save file in the pre-1.6 (non-zip) layout
                with warnings.catch_warnings():   # torch comments on foreign pickle protocols
                    warnings.simplefilter("ignore", UserWarning)
                    legacy = _torch_state_dict(path)
            except MrhdError:
                legacy = None
            if legacy is None:
                raise
            sd, fmt = state_dict_from_pytorchvideo(legacy, cfg), "pytorchvideo"
        else:
            sd, fmt = state_dict_from_caffe2(blobs, cfg), "caffe2"
    own = model.state_dict()
    for key, value in sd.items():
        if fmt == "caffe2" and value.ndim < own[key].ndim:
            # Caffe2 may drop trailing unit dims (checkpoint.py pads them back with 1s)
            value = sd[key] = value.reshape(*value.shape, *[1] * (own[key].ndim - value.ndim))
        if tuple(value.shape) != tuple(own[key].shape):
            raise MrhdError(f"{path}: {key} has shape {tuple(value.shape)}, SlowFast R50 8x8 "
                            f"needs {tuple(own[key].shape)}")
    if fmt == "caffe2":   # no counters in Caffe2; keep ours (unused in eval mode)
        sd.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked")})
    model.load_state_dict(sd, strict=True)
    return model.eval().requires_grad_(False), fmt
