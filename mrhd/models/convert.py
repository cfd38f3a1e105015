"""Convert an authors' checkpoint (``{"model": state_dict, "opt": Namespace, ...}``) into mrhd's format.

The model's :class:`~mrhd.models.registry.ModelSpec` says how: ``config_from_opt`` turns the saved
options into our config and ``convert_state_dict`` renames keys (identity when None). A conversion
only succeeds when the converted state dict loads into the built model with no missing and no
unexpected keys and every shape matching, which is also how a checkpoint of another model is caught.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from mrhd.encoders.streams import stream_of_folder
from mrhd.errors import MrhdError
from mrhd.io import file_sha256
from mrhd.weights.checkpoint import (
    MODEL_CHECKPOINT_FIX,
    is_mrhd_checkpoint,
    load_checkpoint,
    official_opt,
    official_state_dict,
    save_checkpoint,
)


def streams_from_opt(opt: dict) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(video streams in order, audio streams) of an official run, read from its feature folder
    names (``v_feat_dirs``, ``a_feat_dir``) or feature files (MESM's ``feat_files``); None when a
    name is not recognised."""
    video = []
    for d in opt.get("v_feat_dirs") or opt.get("feat_files") or []:
        stream = stream_of_folder(Path(str(d).rstrip("/")).name)
        if stream is None:
            return None
        video.append(stream)
    if not video:
        return None
    audio = ("pann",) if (opt.get("a_feat_dir") or opt.get("a_feat_dirs")) else ()
    return tuple(video), audio


def profile_from_opt(opt: dict, default: str | None = None, preferred: str | None = None) -> str | None:
    """The feature profile an official run used: the first of ``preferred`` (the model's own
    profile), the name built from the streams (``[slowfast, clip]`` + audio -> ``slowfast_clip_pann``)
    and every other profile, whose video and audio streams are those of the run."""
    from mrhd.features.profiles import available_profiles, load_profile

    streams = streams_from_opt(opt)
    if streams is None:
        return default
    video, audio = streams
    built = "_".join(video + audio)
    for name in dict.fromkeys([n for n in (preferred, built) if n] + available_profiles()):
        try:
            prof = load_profile(name)
        except MrhdError:
            continue
        if prof.video == video and (set(prof.audio) == set(audio) or (prof.audio_optional and not audio)):
            return name
    return built


def config_to_dict(cfg: Any) -> dict:
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return dict(cfg)


def _json_safe(value: Any) -> Any:
    """Options as plain builtins, so an mrhd checkpoint never needs an allow-list to load."""
    return json.loads(json.dumps(value, default=str))


def build_and_load(spec, cfg, state_dict: dict, *, what: str):
    """Build the network of ``spec`` from ``cfg`` and load ``state_dict`` strictly; a mismatch is an
    :class:`MrhdError` that names the first offending keys."""
    net = spec.build(cfg)
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict)
                   if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state_dict[k].shape)} vs "
                         f"{tuple(own[k].shape)})")
        raise MrhdError(f"{what} does not fit model {spec.name!r}: " + ", ".join(parts)
                        + "; is it a checkpoint of another model or profile?")
    net.load_state_dict(state_dict, strict=True)
    return net


def convert_checkpoint(src: str | Path, dst: str | Path, *, model: str) -> dict:
    """Read the authors' checkpoint ``src`` for ``model`` and write it as an mrhd checkpoint ``dst``.
    Returns a summary (model, profile, keys)."""
    from mrhd.models.registry import get_spec

    src, dst = Path(src), Path(dst)
    spec = get_spec(model)
    ckpt = load_checkpoint(src, what="model checkpoint", fix=MODEL_CHECKPOINT_FIX)
    if is_mrhd_checkpoint(ckpt):
        raise MrhdError(f"{src} is already an mrhd checkpoint (model {ckpt.get('model')!r}); "
                        "nothing to convert")
    opt = official_opt(ckpt)
    if not opt:
        raise MrhdError(f"{src} has no saved options ('opt'), so its configuration is unknown; "
                        "convert the training run's checkpoint, not a bare state dict")
    try:
        cfg = spec.config_from_opt(opt) if spec.config_from_opt else spec.config_cls(
            **{f.name: opt[f.name] for f in dataclasses.fields(spec.config_cls) if f.name in opt})
    except (KeyError, TypeError, ValueError) as err:
        raise MrhdError(f"{src}: its options do not describe a {model} model ({err}); "
                        "is it a checkpoint of another model?") from None
    state_dict = official_state_dict(ckpt)
    if spec.convert_state_dict:
        state_dict = spec.convert_state_dict(state_dict)
    state_dict = {k: v for k, v in state_dict.items() if torch.is_tensor(v)}
    build_and_load(spec, cfg, state_dict, what=str(src))
    profile = profile_from_opt(opt, default=spec.default_profile, preferred=spec.default_profile)
    save_checkpoint(dst, model=model, config=config_to_dict(cfg), state_dict=state_dict, profile=profile,
                    extra={"source": {"file": src.name, "sha256": file_sha256(src), "opt": _json_safe(opt)}})
    return {"model": model, "profile": profile, "keys": len(state_dict)}
