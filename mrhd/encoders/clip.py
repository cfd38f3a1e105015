"""CLIP ViT-B/32 through open_clip: the ``clip`` video stream and the ``clip_text`` query stream.

Recipe (docs/FEATURES.md, as Moment-DETR's extractor did it): one frame per 2-s clip, pixels /255
then CLIP mean/std, ``encode_image`` (projected, not normalised). Text: per-token ``ln_final`` output
(not projected) from SOT to EOT inclusive, plus the pooled EOT token @ ``text_projection``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mrhd.encoders.base import EncoderInfo, TextEncoder, VideoEncoder, resolve_encoder_weights
from mrhd.encoders.factory import register_encoder
from mrhd.encoders.pixels import CLI_PIXELS, CLIP_MEAN, CLIP_STD, PIXELS_VERSION, normalise_pixels
from mrhd.errors import MrhdError
from mrhd.weights.checkpoint import load_checkpoint, unwrap_state_dict

WEIGHTS_ID = "clip-vit-b32-openai"
SOT_TOKEN = 49406
EOT_TOKEN = 49407
TEXT_BATCH = 64   # texts per text-tower run (sorted by length, so a batch pads little)


@dataclass
class ClipConfig:
    """The towers of the model; ``full`` is open_clip's ViT-B-32.json."""

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_head_width: int = 64
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    quick_gelu: bool = False   # OpenAI weights use QuickGELU; set from the checkpoint when loading


def clip_config(size: str) -> ClipConfig:
    if size == "full":
        return ClipConfig()
    if size == "tiny":
        # a small random model for CPU tests; the tokeniser and context stay the real ones
        return ClipConfig(embed_dim=32, vision_width=64, vision_layers=2, vision_head_width=32,
                          text_width=32, text_heads=2, text_layers=2, quick_gelu=True)
    raise MrhdError(f"unknown encoder size {size!r}; choose 'full' or 'tiny'")


def _create_open_clip(cfg: ClipConfig):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=cfg.vision_layers, width=cfg.vision_width,
                           head_width=cfg.vision_head_width, patch_size=cfg.patch_size,
                           image_size=cfg.image_size)
    text = CLIPTextCfg(context_length=cfg.context_length, vocab_size=cfg.vocab_size,
                       width=cfg.text_width, heads=cfg.text_heads, layers=cfg.text_layers)
    # cast_dtype=float16 only selects open_clip's LayerNormFp32 (normalise in fp32, cast back):
    # the same numbers in fp32, and OpenAI's LayerNorm when the official precision halves the weights
    return CLIP(cfg.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=cfg.quick_gelu,
                cast_dtype=torch.float16)


def _random_model(size: str):
    """Fixed-seed random weights, no file and no download. For ``full`` this builds exactly what
    ``open_clip.create_model('ViT-B-32', pretrained=None)`` builds (ViT-B-32.json, GELU), without
    its "no pretrained weights" warning on every --random-weights run."""
    cfg = clip_config(size)
    torch.manual_seed(0)
    return _create_open_clip(cfg), cfg


def read_openai_state_dict(path: Path) -> dict:
    """OpenAI's release is a TorchScript archive (``ViT-B-32.pt``); plain state dicts (also wrapped
    as ``{'state_dict': {'module.…'}}`` by training scripts) are accepted too."""
    try:
        with warnings.catch_warnings():   # torch 2.x marks TorchScript deprecated; the file is one
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        pass
    ckpt = load_checkpoint(path, what="CLIP checkpoint",
                           fix="give OpenAI's ViT-B-32.pt or a state dict saved with torch.save")
    return {k.removeprefix("module."): v for k, v in unwrap_state_dict(ckpt, ("state_dict",)).items()}


def config_from_state_dict(sd: dict) -> ClipConfig:
    """Tower sizes read off the tensors (as open_clip's build_model_from_openai_state_dict does)."""
    try:
        conv = sd["visual.conv1.weight"]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_width = sd["ln_final.weight"].shape[0]
        return ClipConfig(
            embed_dim=sd["text_projection"].shape[1],
            image_size=conv.shape[-1] * grid,
            patch_size=conv.shape[-1],
            vision_width=conv.shape[0],
            vision_layers=len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")}),
            vision_head_width=64,
            context_length=sd["positional_embedding"].shape[0],
            vocab_size=sd["token_embedding.weight"].shape[0],
            text_width=text_width,
            text_heads=text_width // 64,
            text_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
            quick_gelu=True,
        )
    except KeyError as err:
        raise MrhdError(f"not an OpenAI CLIP ViT checkpoint (no {err.args[0]!r}); "
                        "give OpenAI's ViT-B-32.pt") from err


def load_openai_model(path: Path):
    """An open_clip ``CLIP`` in fp32 with OpenAI's weights; every tensor must be used."""
    sd = read_openai_state_dict(path)
    # JIT archive extras (open_clip openai.py pops the same three); a TorchScript trace of an
    # open_clip model also saves its non-persistent causal mask
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        sd.pop(key, None)
    cfg = config_from_state_dict(sd)
    heads = cfg.vision_width // cfg.vision_head_width
    if heads * cfg.vision_head_width != cfg.vision_width:
        raise MrhdError(f"{path}: vision width {cfg.vision_width} is not a multiple of 64")
    model = _create_open_clip(cfg)
    sd = {k: v.float() for k, v in sd.items()}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as err:   # tensors of the wrong shape
        raise MrhdError(f"{path} does not match CLIP ViT: {str(err).splitlines()[-1].strip()}") from err
    if missing or unexpected:
        raise MrhdError(f"{path} does not match CLIP ViT: missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}")
    return model, cfg


def load_clip(weights: str | None, random_weights: bool, size: str):
    """(model in eval mode, config, weights label for the store)."""
    if not random_weights and size != "full":
        raise MrhdError("size 'tiny' exists only with random weights")
    source = resolve_encoder_weights(weights, WEIGHTS_ID, random_weights=random_weights)
    model, cfg = _random_model(size) if source.path is None else load_openai_model(source.path)
    model.eval().requires_grad_(False)
    return model, cfg, source.label


def _arch(cfg: ClipConfig) -> dict:
    return {"name": "ViT-B-32" if cfg == ClipConfig(quick_gelu=cfg.quick_gelu) else "ViT-custom",
            **asdict(cfg)}


@dataclass(frozen=True)
class ClipFrames:
    """Decoded frames -> one uint8 [n, S, S, 3] tensor, checked. Small and picklable: the job
    runner's decoding workers run it, and uint8 keeps what travels to the main process 4x smaller
    than float pixels; normalisation happens on the encoder's device (:func:`clip_pixels`)."""

    image_size: int = 224

    def __call__(self, clips) -> torch.Tensor:
        frames = torch.from_numpy(np.ascontiguousarray(np.stack([np.asarray(c) for c in clips])))
        if frames.dtype != torch.uint8 or frames.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"CLIP expects uint8 [{self.image_size}, {self.image_size}, 3] frames, "
                             f"got {frames.dtype} {tuple(frames.shape[1:])}")
        return frames


def clip_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [n, S, S, 3] (any device) -> float [n, 3, S, S]: /255, then CLIP mean/std."""
    return normalise_pixels(frames, CLIP_MEAN, CLIP_STD)


# what each precision mode computes on CUDA (CPU runs are fp32 in both)
CLIP_PRECISIONS = {
    "official": "fp16 weights, LayerNorm in fp32 (OpenAI clip.load on CUDA, as the released features)",
    "fast": "fp32 weights under fp16 autocast",
}


class ClipVideoEncoder(VideoEncoder):
    input_kind = "clip_frame"
    autocast_dtype = torch.float16
    store_dtype = "float16"

    def __init__(self, model, cfg: ClipConfig, weights_label: str, device="cpu"):
        self.preprocessor = ClipFrames(cfg.image_size)
        recipe = {
            "model": "open_clip CLIP", "arch": _arch(cfg), "weights": weights_label,
            "input": self.input_kind, "fps": 0.5, "frames_per_clip": 1, "clip_len": 2.0,
            "resize": f"short side {cfg.image_size} bicubic", "crop": f"centre {cfg.image_size}",
            "pixels": CLI_PIXELS, "pixels_version": PIXELS_VERSION,
            "pixel_scale": "1/255", "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
            "layer": "encode_image (projected, not normalised)",
        }
        super().__init__(EncoderInfo("clip", cfg.embed_dim, weights_label, recipe), device)
        self.model = model.to(self.device)
        self.set_precision("official")

    def set_precision(self, mode: str) -> None:
        """``official``: on CUDA the weights are halved as OpenAI's ``clip.load`` did (convolutions,
        linear layers, attention and projections in fp16, LayerNorm in fp32); ``fast``: fp32 weights
        under fp16 autocast. fp32 on CPU either way."""
        super().set_precision(mode)
        self.info.recipe["precision"] = CLIP_PRECISIONS[mode]
        if self.device.type == "cuda" and mode == "official":
            from open_clip.model import convert_weights_to_lp

            convert_weights_to_lp(self.model.float(), torch.float16)
            self.autocast_dtype = None
        else:
            self.model.float()
            self.autocast_dtype = torch.float16

    def preprocess(self, clips) -> torch.Tensor:
        """Frames -> uint8 [n, S, S, 3] (see :class:`ClipFrames`)."""
        return self.preprocessor(clips)

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> the ViT input [n, 3, S, S] on the device."""
        return clip_pixels(batch.to(self.device))

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        dtype = self.model.visual.conv1.weight.dtype   # fp16 under the official CUDA precision
        return self.model.encode_image(self.pixels(batch).to(dtype)).float()


class PackedTextTower:
    """The text tower's blocks with their linear weights packed once for oneDNN (CPU only). MKL's
    sgemm packs the weight of every product again on every call, which for a query's ~10 tokens
    costs more than the product itself: the tower reads its 151 MB of weights several times per
    query. Packed once, a 10-token query's tower takes ~25% less CPU time. The same arithmetic in
    another blocking: equal to open_clip's forward to ~5e-6 (tests/test_encoders_clip.py).
    ``of(model, device)`` is None where it does not apply (CUDA, a build without oneDNN, blocks of
    another shape than OpenAI's pre-LN ones)."""

    def __init__(self, model):
        reorder = torch.ops.mkldnn._reorder_linear_weight
        self.model = model
        self.blocks = []
        for blk in model.transformer.resblocks:
            attn, mlp = blk.attn, blk.mlp
            self.blocks.append({
                "ln_1": blk.ln_1, "ln_2": blk.ln_2, "heads": attn.num_heads, "gelu": mlp.gelu,
                **{name: (reorder(lin_w.detach()), lin_b.detach()) for name, lin_w, lin_b in (
                    ("qkv", attn.in_proj_weight, attn.in_proj_bias),
                    ("out", attn.out_proj.weight, attn.out_proj.bias),
                    ("fc", mlp.c_fc.weight, mlp.c_fc.bias),
                    ("proj", mlp.c_proj.weight, mlp.c_proj.bias))},
            })

    @classmethod
    def of(cls, model, device: torch.device) -> PackedTextTower | None:
        if device.type != "cpu" or not torch.backends.mkldnn.is_available() or \
                not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            return None
        for blk in model.transformer.resblocks:
            plain = all(isinstance(getattr(blk, n), torch.nn.Identity) for n in ("ls_1", "ls_2")) and \
                not hasattr(blk, "ln_1_kv") and isinstance(blk.attn, torch.nn.MultiheadAttention) and \
                blk.attn.in_proj_weight is not None and set(dict(blk.mlp.named_children())) == {"c_fc", "gelu", "c_proj"}
            if not plain:
                return None
        return cls(model)

    @staticmethod
    def _linear(x: torch.Tensor, packed: tuple) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed[0], packed[1], "none", [], "")

    def __call__(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """Embedded ids [n, L, width] through the blocks (causal additive ``attn_mask`` [L, L])."""
        n, length, width = x.shape
        for blk in self.blocks:
            qkv = self._linear(blk["ln_1"](x), blk["qkv"])
            q, k, v = qkv.view(n, length, 3, blk["heads"], -1).permute(2, 0, 3, 1, 4)
            attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            x = x + self._linear(attended.transpose(1, 2).reshape(n, length, width), blk["out"])
            x = x + self._linear(blk["gelu"](self._linear(blk["ln_2"](x), blk["fc"])), blk["proj"])
        return x


class ClipTextEncoder(TextEncoder):
    store_dtype = "float32"

    def __init__(self, model, cfg: ClipConfig, weights_label: str, device="cpu"):
        from open_clip.tokenizer import SimpleTokenizer

        self.tokenizer = SimpleTokenizer(context_length=cfg.context_length)
        recipe = {
            "model": "open_clip CLIP", "arch": _arch(cfg), "weights": weights_label,
            "tokenizer": "CLIP BPE", "context_length": cfg.context_length,
            "sot": SOT_TOKEN, "eot": EOT_TOKEN, "truncation": "first 77 tokens, last set to EOT",
            "tokens": "ln_final output, not projected, SOT..EOT inclusive",
            "pooled": "EOT token @ text_projection",
        }
        super().__init__(EncoderInfo("clip_text", cfg.text_width, weights_label, recipe), device)
        self.model = model.to(self.device)
        self.packed = PackedTextTower.of(self.model, self.device)   # None: open_clip's own forward

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """[n, 77] ids; a text longer than the context is cut and its last id set to EOT."""
        return self.tokenizer(list(texts))

    @torch.inference_mode()
    def token_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """``ln_final`` output for every position given, [n, L, width] for ids [n, L] (L <= 77). The
        mask is causal, so a position's output depends only on the ids up to it: the first L
        positions of a 77-position run equal this L-position run, and padding after EOT is inert."""
        m = self.model
        length = tokens.shape[1]
        x = m.token_embedding(tokens.to(self.device)) + m.positional_embedding[:length]
        tower = self.packed or m.transformer
        x = tower(x, attn_mask=m.attn_mask[:length, :length])
        return m.ln_final(x)

    def encode_texts(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Texts of similar length run together, each batch only as far as its longest EOT: a
        15-token query costs ~1.1 GFLOP instead of the ~5.8 of all 77 positions."""
        if not texts:
            return []
        tokens = self.tokenize(texts)
        lengths = (tokens.argmax(dim=-1) + 1).tolist()   # EOT has the highest id (open_clip's 'argmax' pooling)
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        out: list = [None] * len(texts)
        for start in range(0, len(order), TEXT_BATCH):
            rows = order[start: start + TEXT_BATCH]
            n_pos = max(lengths[i] for i in rows)
            states = self.token_states(tokens[rows, :n_pos]).float()
            eot = torch.tensor([lengths[i] - 1 for i in rows], device=states.device)
            with torch.inference_mode():
                pooled = states[torch.arange(len(rows), device=states.device), eot] @ self.model.text_projection.float()
            for j, i in enumerate(rows):
                out[i] = (states[j, : lengths[i]].cpu(), pooled[j].cpu())
        return out


def build_clip_video(device="cpu", weights=None, random_weights=False, size="full") -> ClipVideoEncoder:
    model, cfg, label = load_clip(weights, random_weights, size)
    return ClipVideoEncoder(model, cfg, label, device)


def build_clip_text(device="cpu", weights=None, random_weights=False, size="full") -> ClipTextEncoder:
    model, cfg, label = load_clip(weights, random_weights, size)
    return ClipTextEncoder(model, cfg, label, device)


register_encoder("clip", build_clip_video)
register_encoder("clip_text", build_clip_text)
