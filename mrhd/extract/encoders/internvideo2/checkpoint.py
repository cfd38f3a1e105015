"""Reading the released InternVideo2 checkpoints into :class:`InternVideo2Model`, strictly.

The files are DeepSpeed/torch saves: the state dict sits under ``module`` or ``model`` (or is bare),
as ``demo/utils.py setup_internvideo2`` unwraps it. Every key must be one of the model's (all of them
present) except: ``*.position_ids`` buffers (saved by older transformers, recomputed here);
``clip_teacher.*`` (a frozen pretraining teacher, if a file carries it); and for the CLIP variant
``text_encoder.*`` (the LLaMA tower, not built here). The 1B stage-2 file was trained on 4 frames:
its ``pos_embed`` / ``clip_pos_embed`` are resampled in time to the frames we run (linear, as the
authors do when they change the frame count).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mrhd.errors import MrhdError
from mrhd.extract.encoders.internvideo2.config import CLIP6B, STAGE2, InternVideo2Config
from mrhd.extract.encoders.internvideo2.model import InternVideo2Model
from mrhd.extract.encoders.internvideo2.vision import interpolate_temporal

TEMPORAL_TABLES = ("vision_encoder.pos_embed", "vision_encoder.clip_pos_embed")


def read_state_dict(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MrhdError(f"{path} is not a readable InternVideo2 checkpoint ({first})") from None
    if isinstance(ckpt, dict):
        for wrapper in ("module", "model"):
            if isinstance(ckpt.get(wrapper), dict):
                ckpt = ckpt[wrapper]
                break
    if not isinstance(ckpt, dict) or not any(str(k).startswith("vision_encoder.") for k in ckpt):
        raise MrhdError(f"{path} is not an InternVideo2 checkpoint (no vision_encoder.* weights); "
                        "use InternVideo2-stage2_1b-224p-f4.pt or InternVideo2_CLIP_6B.pth")
    return ckpt


def detect_variant(state: dict) -> str:
    """Stage 2 carries the BERT text tower and the distillation heads; CLIP has neither."""
    if any(k.startswith(("text_encoder.bert.", "vision_encoder.clip_decoder.")) for k in state):
        return STAGE2
    return CLIP6B


def _ignorable(key: str, variant: str) -> bool:
    return (key.endswith("position_ids") or key.startswith("clip_teacher.")
            or (variant == CLIP6B and key.startswith("text_encoder.")))


def load_into(model: InternVideo2Model, state: dict, source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` (which may hold only some parts), refusing any key mismatch
    with the FULL model of this config, so a wrong or truncated file never runs half-random."""
    cfg: InternVideo2Config = model.cfg
    with torch.device("meta"):
        full = InternVideo2Model(cfg)
    expected = full.state_dict()
    state = {k: v for k, v in state.items() if not _ignorable(k, cfg.variant)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else "") + \
               (", " if missing and unexpected else "") + \
               (f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "")
        raise MrhdError(f"{source} does not match InternVideo2 {cfg.variant}: {what}; "
                        "pass the released checkpoint of that variant")
    state = dict(state)
    for key in TEMPORAL_TABLES:
        if key in state and state[key].shape != expected[key].shape:
            state[key] = interpolate_temporal(state[key], cfg.vision.t_size, cfg.vision.grid)
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise MrhdError(f"{source}: {key} has shape {tuple(tensor.shape)}, InternVideo2 {cfg.variant} "
                            f"needs {tuple(expected[key].shape)}; wrong variant or size")
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
