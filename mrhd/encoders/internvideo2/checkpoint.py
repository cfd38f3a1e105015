"""Reading the released InternVideo2 checkpoints into :class:`InternVideo2Model`, strictly.

The files are DeepSpeed/torch saves: the state dict sits under ``module`` or ``model`` (or is bare),
as ``demo/utils.py setup_internvideo2`` unwraps it. Every key must be one of the full model's, and
every weight of the towers being built must be present, except: ``*.position_ids`` buffers (saved
by older transformers, recomputed here) and ``clip_teacher.*`` (a frozen pretraining teacher, if a
file carries it). A tower that is not built may be absent from the file (a vision-only file feeds
the video stream). CLIP files: LoRA adapters of the LLaMA tower are merged first
(``text_llama.merge_lora``). The 1B stage-2 file was trained on 4 frames: its ``pos_embed`` /
``clip_pos_embed`` are resampled in time to the frames we run (linear, as the authors do when they
change the frame count). Tensors are assigned, not copied, so a full-size model is never
materialised twice.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mrhd.encoders.internvideo2.config import CLIP6B, STAGE2, InternVideo2Config, variant_config
from mrhd.encoders.internvideo2.model import InternVideo2Model
from mrhd.encoders.internvideo2.text_llama import LlamaTextEncoder, merge_lora
from mrhd.encoders.internvideo2.vision import interpolate_temporal
from mrhd.errors import MrhdError
from mrhd.weights.checkpoint import load_checkpoint, unwrap_state_dict

TEMPORAL_TABLES = ("vision_encoder.pos_embed", "vision_encoder.clip_pos_embed")
LLAMA_EMBED = "text_encoder.transformer.embed_tokens.weight"


def read_state_dict(path: Path) -> dict:
    fix = "use InternVideo2-stage2_1b-224p-f4.pt or InternVideo2_CLIP_6B.pth"
    ckpt = unwrap_state_dict(load_checkpoint(path, what="InternVideo2 checkpoint", fix=fix), ("module", "model"))
    if not any(str(k).startswith(("vision_encoder.", "text_encoder.")) for k in ckpt):
        raise MrhdError(f"{path} is not an InternVideo2 checkpoint (no vision_encoder.* / text_encoder.* "
                        f"weights); {fix}")
    return ckpt


def detect_variant(state: dict) -> str:
    """Stage 2 carries the BERT text tower and the distillation heads; CLIP has neither."""
    if any(k.startswith(("text_encoder.bert.", "vision_encoder.clip_decoder.")) for k in state):
        return STAGE2
    return CLIP6B


def config_for(state: dict, size: str) -> tuple[InternVideo2Config, dict]:
    """(config, state with LoRA merged) of a released file; the LLaMA vocabulary is read off it."""
    variant = detect_variant(state)
    cfg = variant_config(variant, size)
    if variant == CLIP6B:
        state = merge_lora(state)
        if LLAMA_EMBED in state:
            cfg.text.vocab_size = int(state[LLAMA_EMBED].shape[0])
    return cfg, state


def _ignorable(key: str) -> bool:
    return key.endswith("position_ids") or key.startswith("clip_teacher.")


def load_into(model: InternVideo2Model, state: dict, source: str = "checkpoint") -> None:
    """Assign ``state`` to ``model`` (built on any device, meta included, holding some towers)."""
    cfg: InternVideo2Config = model.cfg
    with torch.device("meta"):
        full = InternVideo2Model(cfg)
    expected = full.state_dict()
    state = {k: v for k, v in state.items() if not _ignorable(k)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else "") + \
               (", " if missing and unexpected else "") + \
               (f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "")
        raise MrhdError(f"{source} does not match InternVideo2 {cfg.variant}: {what}; "
                        "pass the released checkpoint of that variant")
    for key in TEMPORAL_TABLES:
        if key in state and state[key].shape != expected[key].shape:
            state[key] = interpolate_temporal(state[key], cfg.vision.t_size, cfg.vision.grid)
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise MrhdError(f"{source}: {key} has shape {tuple(tensor.shape)}, InternVideo2 {cfg.variant} "
                            f"needs {tuple(expected[key].shape)}; wrong variant or size")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True, assign=True)
    text = getattr(model, "text_encoder", None)
    if isinstance(text, LlamaTextEncoder):
        text.reset_rotary()
