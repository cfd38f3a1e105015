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
import codecs
import pickle
import re
import tarfile
import warnings
import zipfile
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
# what to do when a grounding model's --weights file is no checkpoint
MODEL_CHECKPOINT_FIX = ("give a checkpoint written by `mrhd train` (RUN_DIR/best.ckpt) or by the model's authors, "
                        "or a registry id (`mrhd weights list`)")


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
    """The line of a ``torch.load`` error that says what is wrong. torch wraps it in advice, among
    it to turn the weights-only safety off (which runs whatever the file pickles): never relayed."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = [ln for ln in lines if not ln.startswith(advice) and "weights_only" not in ln
              and "trusted source" not in ln] or [""]
    return f"{type(err).__name__}: {detail[0][:200]}".rstrip(": ")


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy (non-zip) files cannot be scanned without unpickling
        return []


# torch's legacy (non-zip) format starts with its magic number 0x1950a86a20f9469cfc6c, pickled
# with protocol 2 (torch.serialization._legacy_save; _legacy_load refuses a file without it)
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def not_a_checkpoint(path: Path) -> str | None:
    """What ``path`` holds instead, when its first bytes show it cannot be a PyTorch checkpoint
    (empty, JSON or other text, HTML, a Git LFS pointer, a zip without ``data.pkl``, other binary
    data); None when it may be one. A PyTorch file is a zip archive with ``<name>/data.pkl`` (the
    format since torch 1.6) or starts with the legacy format's magic number. Checked before
    unpickling, so that unreadable bytes are never reported as a refused pickle."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "it is empty (0 bytes)"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "it is a damaged zip archive"
        return None if any(n.endswith("data.pkl") for n in names) else "it is a zip archive without data.pkl"
    if head.startswith(LEGACY_MAGIC) or tarfile.is_tarfile(path):   # tar: torch < 0.4
        return None
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file it points to (run `git lfs pull` or download the file)"
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head).lstrip().lower()   # a cut last char is fine
        if any(ord(ch) < 32 and ch not in "\t\n\r\f" for ch in text):
            raise UnicodeDecodeError("utf-8", head, 0, 1, "control characters")
    except UnicodeDecodeError:
        return "it holds binary data that is neither a PyTorch zip archive nor a legacy torch.save file"
    if text.startswith(("<!doctype", "<html", "<?xml")):
        return "it is an HTML/XML page (a failed download?)"
    if text.startswith(("{", "[")):
        return "it is JSON text"
    return "it is a text file"


def load_checkpoint(path: str | Path, *, what: str = "PyTorch checkpoint", fix: str = "re-download or re-create it",
                    also_allow: Sequence = (), also_allow_names: str = "") -> dict:
    """Load any checkpoint safely: tensors, builtins, :data:`LEGACY_SAFE_GLOBALS` and ``also_allow``
    only (PANNs' files need numpy arrays; ``also_allow_names`` names them in the refusal). Every
    model and encoder checkpoint is read here.

    Returns the raw dict (mrhd format, the authors' layout, or an encoder's state dict; see
    :func:`unwrap_state_dict`); raises :class:`MrhdError` for a missing file, a file that is not a
    ``what`` at all or not a readable one (``fix`` says what to do), or one that pickles objects
    outside the allow-list.
    """
    path = Path(path)
    if path.is_dir():
        raise MrhdError(f"checkpoint {path} is a folder; give the checkpoint file")
    if not path.is_file():
        raise MrhdError(f"checkpoint {path} not found; give an existing file or a registry id "
                        "(see `mrhd weights list`)")
    instead = not_a_checkpoint(path)
    if instead:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise MrhdError(f"{path} is not {article} {what} at all: {instead}; {fix}")
    try:
        with torch.serialization.safe_globals([*LEGACY_SAFE_GLOBALS, *also_allow]), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. torch's "please file an issue" on an odd pickle protocol
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        blocked = re.findall(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else []
        blocked = [name for name in blocked if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", name)]
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
