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


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy (non-zip) files cannot be scanned without unpickling
        return []


def load_checkpoint(path: str | Path) -> dict:
    """Load any checkpoint safely: tensors, builtins and :data:`LEGACY_SAFE_GLOBALS` only.

    Returns the raw dict (mrhd format or the authors' layout); raises :class:`MrhdError` for a missing
    file, a file that is not a checkpoint, or one that pickles objects outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"checkpoint {path} not found; give an existing file or a registry id "
                        "(see `mrhd weights list`)")
    try:
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = [g for g in _unsafe_globals(path)]
        what = ", ".join(found) if found else str(err).strip().splitlines()[0]
        raise MrhdError(f"refusing to load {path}: it pickles objects outside the allow-list ({what}); "
                        "only tensors and the official options Namespace are accepted") from None
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MrhdError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {first}); "
                        "re-download or re-create it") from None
    if not isinstance(ckpt, dict):
        raise MrhdError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def is_mrhd_checkpoint(ckpt: dict) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == FORMAT


def official_state_dict(ckpt: dict) -> dict:
    """The model weights of an authors' checkpoint (``"model"``; some save the bare state dict)."""
    sd = ckpt.get("model", ckpt.get("state_dict", ckpt))
    if not isinstance(sd, dict) or not any(torch.is_tensor(v) for v in sd.values()):
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
