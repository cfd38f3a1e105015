"""PANNs Cnn14 (Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks", 2020) as the
``pann`` stream: the 2048-d ``embedding`` of each 2-s chunk of 32-kHz mono audio.

Written after qiuqiangkong/audioset_tagging_cnn pytorch/models.py (``Cnn14``, ``ConvBlock``) and its
front end, qiuqiangkong/torchlibrosa torchlibrosa/stft.py (``STFT`` as a Conv1d DFT, ``Spectrogram``,
``LogmelFilterBank``), with Cnn14's parameters: hann window 1024, hop 320, centre reflect padding,
power 2, 64 Slaney mel bins 50..14000 Hz (librosa.filters.mel defaults), 10*log10 with ref 1.0,
amin 1e-10, no top_db. Module names equal the release's state-dict keys so that
``Cnn14_mAP=0.431.pth`` loads one to one. Nothing here downloads, imports librosa or shells out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrhd.encoders.base import EncoderInfo, VideoEncoder, resolve_encoder_weights
from mrhd.encoders.factory import register_encoder
from mrhd.errors import MrhdError
from mrhd.weights.checkpoint import load_checkpoint, unwrap_state_dict

WEIGHTS_ID = "panns-cnn14-32k"
CHUNK_SECONDS = 2.0


@dataclass(frozen=True)
class Cnn14Config:
    sample_rate: int = 32000
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    ref: float = 1.0
    amin: float = 1e-10
    classes: int = 527          # AudioSet
    widths: tuple = (64, 128, 256, 512, 1024, 2048)

    @property
    def dim(self) -> int:
        return self.widths[-1]

    @property
    def chunk_samples(self) -> int:
        return int(CHUNK_SECONDS * self.sample_rate)


def cnn14_config(size: str) -> Cnn14Config:
    if size == "full":
        return Cnn14Config()
    if size == "tiny":
        # same front end and layer names, 1/16 of the channels
        return replace(Cnn14Config(), widths=(4, 8, 16, 32, 64, 128), classes=10)
    raise MrhdError(f"unknown encoder size {size!r}; choose 'full' or 'tiny'")


# --- front end ---------------------------------------------------------------------------------

def hz_to_mel_slaney(hz):
    """Slaney's Auditory Toolbox scale (librosa hz_to_mel, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, min_log_mel + np.log(np.maximum(hz, 1e-12) / 1000.0) / logstep, hz / f_sp)


def mel_to_hz_slaney(mel):
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, 1000.0 * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_fft//2 + 1, n_mels] float32 = librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax).T
    (htk=False, norm='slaney'): triangles between mel-spaced edges, scaled to unit area in Hz."""
    fft_hz = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return weights.astype(np.float32).T.copy()


def periodic_hann(n: int) -> np.ndarray:
    """scipy/librosa get_window('hann', n, fftbins=True)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def dft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed DFT rows as Conv1d weights [n_fft//2 + 1, 1, n_fft] (torchlibrosa STFT: real part
    cos(2*pi*k*n/N)*w[n], imaginary part -sin(2*pi*k*n/N)*w[n])."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)
    phase = 2.0 * np.pi * ((k[:, None] * n[None, :]) % n_fft) / n_fft   # exact phase, no drift
    window = periodic_hann(n_fft)
    return ((np.cos(phase) * window)[:, None, :].astype(np.float32),
            (-np.sin(phase) * window)[:, None, :].astype(np.float32))


class DFTConv(nn.Module):
    """STFT as two strided Conv1d (frozen); input centre-padded by n_fft/2 with reflection."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        real, imag = dft_kernels(n_fft)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(real))
            self.conv_imag.weight.copy_(torch.from_numpy(imag))

    def forward(self, wave: torch.Tensor):
        x = F.pad(wave[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        # [n, freq, time] -> [n, 1, time, freq]
        return self.conv_real(x)[:, None].transpose(2, 3), self.conv_imag(x)[:, None].transpose(2, 3)


class PowerSpectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.stft = DFTConv(n_fft, hop)

    def forward(self, wave):
        real, imag = self.stft(wave)
        return real ** 2 + imag ** 2


class LogMel(nn.Module):
    """Power spectrogram @ melW, then 10*log10(max(x, amin)) - 10*log10(max(amin, ref))."""

    def __init__(self, cfg: Cnn14Config):
        super().__init__()
        self.amin, self.ref = cfg.amin, cfg.ref
        fb = slaney_mel_filterbank(cfg.sample_rate, cfg.window_size, cfg.mel_bins, cfg.fmin, cfg.fmax)
        self.melW = nn.Parameter(torch.from_numpy(fb), requires_grad=False)

    def forward(self, power):
        mel = torch.matmul(power, self.melW)
        return 10.0 * torch.log10(mel.clamp(min=self.amin)) - 10.0 * math.log10(max(self.amin, self.ref))


# --- network -----------------------------------------------------------------------------------

class ConvBlock(nn.Module):
    """(3x3 conv -> BN -> ReLU) x 2, then average pooling."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim_out)
        self.bn2 = nn.BatchNorm2d(dim_out)

    def forward(self, x, pool: int):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(nn.Module):
    def __init__(self, cfg: Cnn14Config):
        super().__init__()
        self.cfg = cfg
        self.spectrogram_extractor = PowerSpectrogram(cfg.window_size, cfg.hop_size)
        self.logmel_extractor = LogMel(cfg)
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        dims = (1, *cfg.widths)
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(dims[i], dims[i + 1]))
        self.fc1 = nn.Linear(cfg.widths[-1], cfg.widths[-1])
        self.fc_audioset = nn.Linear(cfg.widths[-1], cfg.classes)   # AudioSet tagging head, unused

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[n, samples] -> [n, 1, frames, mel_bins]."""
        return self.logmel_extractor(self.spectrogram_extractor(wave))

    def embedding(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.log_mel(wave)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)   # BN over mel bins
        for i in range(6):
            # blocks 1-5 halve time and frequency; block 6 pools with kernel 1 (identity)
            x = getattr(self, f"conv_block{i + 1}")(x, pool=2 if i < 5 else 1)
        x = x.mean(dim=3)                                 # over frequency
        x = x.max(dim=2).values + x.mean(dim=2)           # over time
        return F.relu(self.fc1(x))

    def forward(self, wave):
        """(clipwise AudioSet probabilities, embedding), as Cnn14.forward in eval mode."""
        emb = self.embedding(wave)
        return torch.sigmoid(self.fc_audioset(emb)), emb


def _numpy_globals() -> list:
    """What the PANNs training checkpoints pickle besides tensors: the sampler state
    (audioset_tagging_cnn pytorch/main.py saves ``'sampler': train_sampler.state_dict()``, lists of
    numpy index arrays). Numpy arrays rebuild from data; no other object is admitted. Files written
    with numpy 1.x name the same functions ``numpy.core.*``."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray

    dtypes = [type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "float32", "float64")]
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar, *dtypes,
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (multiarray.scalar, "numpy.core.multiarray.scalar")]


def load_cnn14_state_dict(path: Path, cfg: Cnn14Config) -> dict:
    """``{'model': state_dict}`` (the release) or a bare state dict; strict names and shapes
    (BatchNorm's ``num_batches_tracked`` counters are optional: eval mode never reads them)."""
    ckpt = load_checkpoint(path, what="PANNs checkpoint", fix="give PANNs' Cnn14_mAP=0.431.pth",
                           also_allow=_numpy_globals(), also_allow_names="numpy arrays")
    sd = unwrap_state_dict(ckpt, ("model",))
    own = Cnn14(cfg).state_dict()
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in own)
    if missing or unexpected:
        raise MrhdError(f"{path} is not a PANNs Cnn14 checkpoint: {len(missing)} missing "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}) keys")
    for key, value in sd.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise MrhdError(f"{path}: {key} has shape {tuple(value.shape)}, Cnn14 needs {tuple(own[key].shape)}")
    return {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **sd}


@dataclass(frozen=True)
class AudioChunks:
    """float [n, 64000] mono 32-kHz chunks -> a float32 tensor; picklable for decoding workers."""

    samples: int = 64000

    def __call__(self, chunks) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(np.stack([np.asarray(c, dtype=np.float32) for c in chunks])))
        if x.ndim != 2 or x.shape[1] != self.samples:
            raise ValueError(f"PANN expects [{self.samples}] audio chunks, got {tuple(x.shape[1:])}")
        return x


class PannEncoder(VideoEncoder):
    input_kind = "audio_chunk"
    autocast_dtype = None        # fp32: log10 of mel power near amin=1e-10 underflows in fp16
    store_dtype = "float32"

    def __init__(self, model: Cnn14, weights_label: str, device="cpu"):
        cfg = model.cfg
        self.preprocessor = AudioChunks(cfg.chunk_samples)
        recipe = {
            "model": "PANNs Cnn14", "arch": asdict(cfg), "weights": weights_label, "input": self.input_kind,
            "sample_rate": cfg.sample_rate, "channels": "mono", "clip_len": CHUNK_SECONDS,
            "chunks": "floor(D/2), each 2-s chunk alone, last partial chunk dropped",
            "stft": {"window": "hann (periodic)", "n_fft": cfg.window_size, "hop": cfg.hop_size,
                     "center": True, "pad_mode": "reflect", "power": 2.0},
            "mel": {"bins": cfg.mel_bins, "fmin": cfg.fmin, "fmax": cfg.fmax, "scale": "slaney",
                    "norm": "slaney", "ref": cfg.ref, "amin": cfg.amin, "top_db": None},
            "layer": "embedding = relu(fc1(max_t + mean_t of mean_f(conv_block6)))",
        }
        super().__init__(EncoderInfo("pann", cfg.dim, weights_label, recipe), device)
        self.model = model.to(self.device).eval().requires_grad_(False)

    def preprocess(self, chunks) -> torch.Tensor:
        return self.preprocessor(chunks)

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.embedding(batch.to(self.device).float()).float()


def build_pann(device="cpu", weights=None, random_weights=False, size="full") -> PannEncoder:
    cfg = cnn14_config(size)
    if random_weights:
        torch.manual_seed(0)
        return PannEncoder(Cnn14(cfg), "random", device)
    if size != "full":
        raise MrhdError("size 'tiny' exists only with random weights")
    source = resolve_encoder_weights(weights, WEIGHTS_ID)
    model = Cnn14(cfg)
    model.load_state_dict(load_cnn14_state_dict(source.path, cfg), strict=True)
    return PannEncoder(model, source.label, device)


register_encoder("pann", build_pann)
