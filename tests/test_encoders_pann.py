"""PANNs Cnn14: the front end against independent numpy computations, the release's state-dict
names, a checkpoint round trip in the release's format, and the encoder contract."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from mrhd.encoders import pann
from mrhd.encoders.factory import build_encoder
from mrhd.errors import MrhdError


@pytest.fixture(scope="module")
def tiny():
    return build_encoder("pann", random_weights=True, size="tiny")


def _reference_mel(sr, n_fft, n_mels, fmin, fmax) -> np.ndarray:
    """librosa.filters.mel(htk=False, norm='slaney') from its definition, one bin at a time."""
    def hz_to_mel(f):
        return f / (200 / 3) if f < 1000 else 15 + np.log(f / 1000) * 27 / np.log(6.4)

    def mel_to_hz(m):
        return m * (200 / 3) if m < 15 else 1000 * np.exp((m - 15) * np.log(6.4) / 27)

    lo, hi = hz_to_mel(fmin), hz_to_mel(fmax)
    edges = [mel_to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for b in range(n_fft // 2 + 1):
        f = b * sr / n_fft
        for m in range(n_mels):
            left, mid, right = edges[m], edges[m + 1], edges[m + 2]
            tri = min((f - left) / (mid - left), (right - f) / (right - mid))
            out[b, m] = max(0.0, tri) * 2 / (right - left)
    return out


def test_mel_filterbank_matches_definition():
    cfg = pann.Cnn14Config()
    fb = pann.slaney_mel_filterbank(cfg.sample_rate, cfg.window_size, cfg.mel_bins, cfg.fmin, cfg.fmax)
    assert fb.shape == (cfg.window_size // 2 + 1, cfg.mel_bins) and fb.dtype == np.float32
    ref = _reference_mel(cfg.sample_rate, cfg.window_size, cfg.mel_bins, cfg.fmin, cfg.fmax)
    np.testing.assert_allclose(fb, ref, rtol=1e-5, atol=1e-9)
    assert (fb.max(axis=0) > 0).all()                   # no empty filter
    hz = np.arange(fb.shape[0]) * cfg.sample_rate / cfg.window_size
    assert fb[hz < cfg.fmin].sum() == 0 and fb[hz > cfg.fmax].sum() == 0
    # the two scales meet at 1 kHz = mel 15 (Slaney)
    assert pann.hz_to_mel_slaney(1000.0) == pytest.approx(15.0)
    assert pann.mel_to_hz_slaney(pann.hz_to_mel_slaney(7000.0)) == pytest.approx(7000.0)


def _numpy_power_spectrogram(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """librosa.stft(center=True, pad_mode='reflect', window='hann') ** 2 with numpy's FFT."""
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop: i * hop + n_fft] * window for i in range(n_frames)])
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2      # [time, freq]


def test_stft_and_log_mel_match_numpy(tiny):
    cfg = tiny.model.cfg
    rng = np.random.default_rng(0)
    t = np.arange(cfg.chunk_samples) / cfg.sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    wave[:3200] = 0.0   # a silent stretch exercises the amin floor
    with torch.no_grad():
        power = tiny.model.spectrogram_extractor(torch.from_numpy(wave)[None])[0, 0].double().numpy()
        log_mel = tiny.model.log_mel(torch.from_numpy(wave)[None])[0, 0].double().numpy()
    ref = _numpy_power_spectrogram(wave, cfg.window_size, cfg.hop_size)
    assert power.shape == ref.shape == (cfg.chunk_samples // cfg.hop_size + 1, cfg.window_size // 2 + 1)
    np.testing.assert_allclose(power, ref, atol=1e-5 * ref.max(), rtol=1e-3)
    fb = pann.slaney_mel_filterbank(cfg.sample_rate, cfg.window_size, cfg.mel_bins, cfg.fmin, cfg.fmax)
    ref_log_mel = 10 * np.log10(np.maximum(ref @ fb.astype(np.float64), cfg.amin))
    assert log_mel.shape == (201, 64)
    np.testing.assert_allclose(log_mel, ref_log_mel, atol=1e-3)   # dB; fp32 conv vs fp64 FFT
    assert log_mel[:5].max() == pytest.approx(-100.0)           # silence: 10*log10(amin)


def test_full_size_matches_release_names():
    """Keys and shapes of Cnn14_mAP=0.431.pth; 80.8 M trainable parameters (PANNs paper, Table)."""
    torch.manual_seed(0)
    model = pann.Cnn14(pann.cnn14_config("full"))
    sd = model.state_dict()
    assert tuple(sd["spectrogram_extractor.stft.conv_real.weight"].shape) == (513, 1, 1024)
    assert tuple(sd["spectrogram_extractor.stft.conv_imag.weight"].shape) == (513, 1, 1024)
    assert tuple(sd["logmel_extractor.melW"].shape) == (513, 64)
    assert tuple(sd["bn0.running_var"].shape) == (64,)
    assert tuple(sd["conv_block1.conv1.weight"].shape) == (64, 1, 3, 3)
    assert tuple(sd["conv_block6.conv2.weight"].shape) == (2048, 2048, 3, 3)
    assert tuple(sd["conv_block6.bn2.running_mean"].shape) == (2048,)
    assert tuple(sd["fc1.weight"].shape) == (2048, 2048) and tuple(sd["fc_audioset.weight"].shape) == (527, 2048)
    assert len(sd) == 84
    trainable = sum(p.numel() for n, p in model.named_parameters()
                    if not n.startswith(("spectrogram_extractor", "logmel_extractor")))
    assert round(trainable / 1e6, 1) == 80.8


def _randomised_tiny(seed: int) -> pann.Cnn14:
    torch.manual_seed(seed)
    model = pann.Cnn14(pann.cnn14_config("tiny"))
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.5)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        model.bn0.running_mean.fill_(-40.0)
        model.bn0.running_var.fill_(400.0)
    return model.eval()


def test_checkpoint_round_trip(tmp_path):
    source = _randomised_tiny(3)
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    # as audioset_tagging_cnn main.py saves it: iteration, model, and the sampler's numpy state
    sampler = {"indexes_per_class": [np.arange(5), np.arange(3, dtype=np.int32)], "queue": [3, 1],
               "pointers_of_classes": [0, 2]}
    torch.save({"iteration": 100, "model": source.state_dict(), "sampler": sampler}, path)
    cfg = pann.cnn14_config("tiny")
    sd = pann.load_cnn14_state_dict(path, cfg)
    loaded = pann.Cnn14(cfg)
    loaded.load_state_dict(sd, strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    wave = torch.randn(2, cfg.chunk_samples) * 0.1
    a = pann.PannEncoder(loaded, "file").encode(wave)
    with torch.no_grad():
        clipwise, emb = source(wave)
    torch.testing.assert_close(a, emb, atol=1e-5, rtol=1e-5)
    assert clipwise.shape == (2, cfg.classes)
    # a state dict saved without the BN counters (older PyTorch) loads as well
    bare = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(bare, tmp_path / "bare.pth")
    loaded.load_state_dict(pann.load_cnn14_state_dict(tmp_path / "bare.pth", cfg), strict=True)


def test_bad_checkpoints_are_user_errors(tmp_path):
    cfg = pann.cnn14_config("tiny")
    sd = _randomised_tiny(0).state_dict()
    cases = {
        "missing.pth": {"model": {k: v for k, v in sd.items() if k != "logmel_extractor.melW"}},
        "unexpected.pth": {"model": {**sd, "fc_extra.weight": torch.zeros(1)}},
        "shape.pth": {"model": {**sd, "fc1.weight": torch.zeros(3, 3)}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(MrhdError):
            pann.load_cnn14_state_dict(tmp_path / name, cfg)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": sd, "sampler": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(MrhdError):
        pann.load_cnn14_state_dict(tmp_path / "evil.pth", cfg)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(MrhdError):
        build_encoder("pann", weights=str(tmp_path / "junk.pth"))


def test_encoder_contract(tiny):
    enc = tiny
    assert enc.name == "pann" and enc.input_kind == "audio_chunk" and enc.dim == 128
    assert enc.autocast_dtype is None and enc.info.weights == "random"
    rng = np.random.default_rng(1)
    chunks = [rng.standard_normal(64000).astype(np.float32) * 0.1 for _ in range(3)]
    batch = enc.preprocess(chunks)
    assert batch.shape == (3, 64000) and batch.dtype == torch.float32
    seen = {}
    enc.model.conv_block6.register_forward_hook(lambda m, i, o: seen.__setitem__("x", o))
    feats = enc.encode(batch)
    assert feats.shape == (3, 128)
    x = seen["x"].mean(dim=3)
    assert seen["x"].shape[2:] == (6, 2)   # 201 frames x 64 mel bins after five 2x2 pools
    with torch.no_grad():
        expected = torch.relu(enc.model.fc1(x.max(dim=2).values + x.mean(dim=2)))
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.encode(batch[2:]), feats[2:], atol=1e-5, rtol=1e-5)   # eval BN
    assert pickle.loads(pickle.dumps(enc.preprocessor))(chunks[:1]).shape == (1, 64000)
    with pytest.raises(ValueError):
        enc.preprocess([np.zeros(32000, np.float32)])
    recipe = enc.info.recipe
    assert recipe["sample_rate"] == 32000 and recipe["mel"]["fmax"] == 14000 and recipe["stft"]["hop"] == 320


def test_embedding_matches_cnn14_layer_order():
    """Cnn14.forward of audioset_tagging_cnn pytorch/models.py in eval mode, written functionally
    from the state dict, with the front end computed in numpy."""
    model = _randomised_tiny(7)
    cfg = model.cfg
    w = model.state_dict()
    wave = np.random.default_rng(2).standard_normal((2, cfg.chunk_samples)).astype(np.float32) * 0.1
    fb = pann.slaney_mel_filterbank(cfg.sample_rate, cfg.window_size, cfg.mel_bins, cfg.fmin, cfg.fmax)
    log_mel = np.stack([10 * np.log10(np.maximum(_numpy_power_spectrogram(x, cfg.window_size, cfg.hop_size)
                                                  @ fb.astype(np.float64), cfg.amin)) for x in wave])
    x = torch.from_numpy(log_mel).float()[:, None]                  # [n, 1, time, mel]

    def bn(t, name):
        return F.batch_norm(t, w[f"{name}.running_mean"], w[f"{name}.running_var"], w[f"{name}.weight"],
                            w[f"{name}.bias"], False, 0.0, 1e-5)

    x = bn(x.transpose(1, 3), "bn0").transpose(1, 3)
    for i in range(1, 7):
        for j in (1, 2):
            x = F.relu(bn(F.conv2d(x, w[f"conv_block{i}.conv{j}.weight"], padding=1), f"conv_block{i}.bn{j}"))
        x = F.avg_pool2d(x, 2 if i < 6 else 1)
    x = x.mean(dim=3)
    x = x.max(dim=2).values + x.mean(dim=2)
    expected = F.relu(F.linear(x, w["fc1.weight"], w["fc1.bias"]))
    got = pann.PannEncoder(model, "x").encode(torch.from_numpy(wave))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
