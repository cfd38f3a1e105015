"""mrhd's own checkpoint format, and safe loading of the authors' checkpoints.

An mrhd checkpoint is a plain dict that ``torch.load(weights_only=True)`` reads with no allow-list:
``{"format": "mrhd-checkpoint/1", "model", "config", "profile", "state_dict", "versions", **extra}``.
It is written atomically (temporary file + rename), so a killed run never leaves a truncated file
that a later run would take as complete.

The authors' checkpoints (Moment-DETR, QD-DETR, TR-DETR, CG-DETR, UniVTG) pickle the argparse
``Namespace`` of their options under ``"opt"``. Those load through an explicit allow-list
(:data:`LEGACY_SAFE_GLOBALS`); a file that pickles anything else is refused, never unpickled.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mrhd.errors import MrhdError
from mrhd.io import atomic_open

FORMAT = "mrhd-checkpoint/1"

# Objects the official checkpoints pickle besides tensors and builtins: the options Namespace
# (moment_detr/train.py saves `"opt": opt` with opt from argparse; QD-DETR, TR-DETR, CG-DETR and
# UniVTG copy that code). Nothing else is admitted.
LEGACY_SAFE_GLOBALS: list = [argparse.Namespace]


def save_checkpoint(path: str | Path, *, model: str, config: dict, state_dict: dict, profile: str,
                    extra: dict | None = None) -> Path:
    """Write an mrhd checkpoint atomically; ``extra`` (epoch, optimizer state, metrics, ...) is merged
    at the top level but may not override the fixed keys."""
    import mrhd

    path = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model": model,
        "config": dict(config),
        "profile": profile,
        "state_dict": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state_dict.items()},
        "versions": {"mrhd": str(mrhd.__version__), "torch": str(torch.__version__)},
    }
    for key, value in (extra or {}).items():
        if key in payload:
            raise ValueError(f"extra key {key!r} would override a checkpoint field")
        payload[key] = value
    if not path.parent.is_dir():
        raise MrhdError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    with atomic_open(path, "wb", durable=True) as fh:
        torch.save(payload, fh)
    return path


def _reason(err: Exception) -> str:
    """The line of a ``torch.load`` error that says what is wrong (torch wraps it in advice)."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = [ln for ln in lines if not ln.startswith(advice)] or lines or [""]
    return f"{type(err).__name__}: {detail[0][:200]}"


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy (non-zip) files cannot be scanned without unpickling
        return []


def load_checkpoint(path: str | Path, *, what: str = "PyTorch checkpoint", fix: str = "re-download or re-create it",
                    also_allow: Sequence = (), also_allow_names: str = "") -> dict:
    """Load any checkpoint safely: tensors, builtins, :data:`LEGACY_SAFE_GLOBALS` and ``also_allow``
    only (PANNs' files need numpy arrays; ``also_allow_names`` names them in the refusal). Every
    model and encoder checkpoint is read here.

    Returns the raw dict (mrhd format, the authors' layout, or an encoder's state dict; see
    :func:`unwrap_state_dict`); raises :class:`MrhdError` for a missing file, a file that is not a
    ``what`` (``fix`` says what to do), or one that pickles objects outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"checkpoint {path} not found; give an existing file or a registry id "
                        "(see `mrhd weights list`)")
    try:
        with torch.serialization.safe_globals([*LEGACY_SAFE_GLOBALS, *also_allow]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        blocked = re.findall(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else []
        if blocked:
            names = ", ".join(_unsafe_globals(path) or blocked)
            extra = f" (and {also_allow_names})" if also_allow else ""
            raise MrhdError(f"refusing to load {path}: it pickles objects outside the allow-list ({names}); "
                            f"only tensors and the official options Namespace{extra} are accepted") from None
        raise MrhdError(f"{path} is not a readable {what} ({_reason(err)}); {fix}") from None
    if not isinstance(ckpt, dict):
        raise MrhdError(f"{path} holds a {type(ckpt).__name__}, not a {what}; {fix}")
    return ckpt


def unwrap_state_dict(ckpt: dict, wrappers: Sequence[str] = ("model", "state_dict")) -> dict:
    """The state dict inside a loaded checkpoint: the first of ``wrappers`` that holds a dict
    (training scripts save ``{"model": ...}``, ``{"state_dict": ...}``, ``{"module": ...}``,
    ``{"model_state": ...}``), else the checkpoint itself (a bare state dict)."""
    for key in wrappers:
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def is_mrhd_checkpoint(ckpt: dict) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == FORMAT


def official_state_dict(ckpt: dict) -> dict:
    """The model weights of an authors' checkpoint (``"model"``; some save the bare state dict)."""
    sd = unwrap_state_dict(ckpt)
    if not any(torch.is_tensor(v) for v in sd.values()):
        raise MrhdError("the checkpoint has no model state dict (expected a 'model' entry of tensors)")
    return sd


def official_opt(ckpt: dict) -> dict:
    """The authors' saved options (``"opt"``, an argparse Namespace or a dict) as a dict; ``{}`` if absent."""
    opt = ckpt.get("opt")
    if opt is None:
        return {}
    if isinstance(opt, argparse.Namespace):
        return dict(vars(opt))
    if isinstance(opt, dict):
        return dict(opt)
    raise MrhdError(f"the checkpoint's 'opt' is a {type(opt).__name__}, expected options")
