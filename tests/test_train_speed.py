"""Training speed options (docs/training-speed.md): each keeps what is learned, the exact path keeps
every number, and the ones that claim to change nothing change nothing."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrhd.annotations import load_annotations
from mrhd.errors import MrhdError
from mrhd.features.profiles import MemoryBudget, StoreReader, load_profile, open_stores
from mrhd.features.store import FeatureStore
from mrhd.features.write import write_store
from mrhd.models.registry import get_spec, make_config
from mrhd.pipeline.collate import collate, prepare_batch
from mrhd.pipeline.datasets import DatasetConfig, MomentDataset
from mrhd.training import speed
from mrhd.training.buckets import LengthBucketSampler, item_lengths
from mrhd.training.config import load_train_config, model_defaults
from mrhd.training.fast_dropout import (
    GRID,
    FastDropout,
    FastDropoutMultiheadAttention,
    dropout_function,
    fast_dropout,
    keep_mask,
    swap_batch_axis,
    use_fast_dropout,
)
from mrhd.training.fast_prelu import FastPReLU, use_fast_prelu
from mrhd.training.speed import default_workers, plan_speed
from mrhd.training.synthetic import SyntheticSpec, make_synthetic
from mrhd.training.trainer import Trainer
from mrhd.training.validation import forward_kwargs, to_float32

TINY = {"hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 64, "t2v_layers": 1}
TRAINABLE = ("moment_detr", "qd_detr", "tr_detr", "cg_detr", "univtg", "cmdnet", "videolights", "sg_detr", "mesm")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("speed"), load_profile("slowfast_clip"),
                          SyntheticSpec(n_train=40, n_val=8, min_clips=8, max_clips=30, n_concepts=3))


def _trainer(model, data, out, resume=False, **kw) -> Trainer:
    fields = {f.name for f in dataclasses.fields(get_spec(model).config_cls)}
    tiny = {k: v for k, v in TINY.items() if k in fields}
    cfg = load_train_config(model, **{**dict(epochs=1, batch_size=8, num_workers=0, eval_every=100,
                                             progress=False, model_config=tiny), **kw})
    return Trainer(cfg, data["features"], data["train"], data["val"], out, resume=resume, log=lambda m: None)


# ---- length buckets -------------------------------------------------------------------------------
def test_bucket_sampler_covers_every_item_once_in_as_many_batches():
    rng = np.random.default_rng(0)
    lengths = [(int(a), int(b)) for a, b in zip(rng.integers(5, 76, 203), rng.integers(4, 33, 203))]
    sampler = LengthBucketSampler(lengths, batch_size=16, pool=4)
    torch.manual_seed(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 13
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert all(len(b) == 16 for b in batches) or sum(len(b) < 16 for b in batches) == 1
    # padding shrinks: the longest video of a bucketed batch is much closer to its items' lengths
    def waste(bs):
        return sum(max(lengths[i][0] for i in b) * len(b) - sum(lengths[i][0] for i in b) for b in bs)
    torch.manual_seed(0)
    shuffled = [list(range(203))[k:k + 16] for k in range(0, 203, 16)]
    perm = torch.randperm(203).tolist()
    shuffled = [[perm[i] for i in b] for b in shuffled]
    assert waste(batches) < 0.5 * waste(shuffled)


def test_bucket_sampler_is_fixed_by_the_torch_seed_and_differs_between_epochs():
    lengths = list(range(100))
    s = LengthBucketSampler(lengths, batch_size=10, pool=2)
    torch.manual_seed(3)
    first, second = list(s), list(s)
    torch.manual_seed(3)
    assert list(s) == first and first != second


def test_item_lengths_estimates_clips_and_tokens_without_reading_features():
    metas = [{"duration": 150, "query": "a man talks"}, {"duration": 31.0, "query": " ".join(["w"] * 40)}, {}]
    assert item_lengths(metas, 2.0, 75, 32) == [(75, 5), (16, 32), (0, 2)]


def _tiny_config(name: str, profile):
    spec = get_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    values = model_defaults(name)
    values.update({"v_feat_dim": profile.video_dim, "t_feat_dim": profile.text_dim})
    values.update({k: v for k, v in TINY.items() if k in fields})
    return make_config(name, {k: v for k, v in values.items() if k in fields})


def _pad_more(batched: dict, extra_clips: int, extra_tokens: int) -> dict:
    """The batch as the collate would pad it next to a longer video and a longer query."""
    out = dict(batched)
    for key, extra in (("video_feat", extra_clips), ("query_feat", extra_tokens), ("pos_mask", extra_clips)):
        if key in out:
            x, m = out[key]
            out[key] = (torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], 1),
                        torch.cat([m, m.new_zeros(m.shape[0], extra)], 1))
    for key in ("saliency_all_labels", "relevant_clips", "saliency_pos_index"):
        if key in out:
            out[key] = torch.cat([out[key], out[key].new_zeros(out[key].shape[0], extra_clips)], 1)
    return out


def _losses(model, criterion, batched) -> dict:
    inputs, targets = prepare_batch(batched)
    targets = dict(targets)
    targets.setdefault("src_txt_mask", inputs["src_txt_mask"])
    targets.setdefault("src_vid_mask", inputs["src_vid_mask"])
    with torch.no_grad():
        outputs = model(**forward_kwargs(model, inputs, targets))
        return {k: float(v) for k, v in criterion(to_float32(outputs), targets).items()}


@pytest.mark.parametrize("name", [m for m in TRAINABLE if load_train_config(m).bucket_by_length])
def test_models_that_bucket_by_length_have_losses_independent_of_padding(name, data):
    """Bucketing is on only where it changes no per-item number: the losses of a batch padded to
    its own longest item equal those of the same batch padded further."""
    profile = load_profile(get_spec(name).default_profile)
    ds = MomentDataset(load_annotations(data["train"]), open_stores(data["features"], profile), profile,
                       DatasetConfig(labels=name))
    cfg = _tiny_config(name, profile)
    torch.manual_seed(0)
    model, criterion = get_spec(name).build(cfg).eval(), get_spec(name).build_criterion(cfg).eval()
    random.seed(0)
    _, batched = collate([ds[i] for i in range(6)])
    tight = _losses(model, criterion, batched)
    loose = _losses(model, criterion, _pad_more(batched, 9, 7))
    assert tight.keys() == loose.keys()
    assert all(abs(tight[k] - loose[k]) <= 1e-5 * max(1.0, abs(tight[k])) for k in tight), (tight, loose)


def test_padding_dependent_models_do_not_bucket_by_default():
    """CG-DETR, TR-DETR and VideoLights pool or normalise over padded positions (their authors'
    code does), so a batch of other lengths would change their per-item losses."""
    for name in ("cg_detr", "tr_detr", "videolights"):
        assert not load_train_config(name).bucket_by_length, name
    assert load_train_config("qd_detr").bucket_by_length


# ---- fast dropout ---------------------------------------------------------------------------------
def test_fast_dropout_keeps_one_minus_p_and_scales_to_the_same_expectation():
    torch.manual_seed(0)
    n = 2_000_000
    for p in (0.1, 0.5):
        y = fast_dropout(torch.ones(n), p)
        kept = float((y > 0).double().mean())
        assert abs(kept - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5, p
        assert abs(float(y.double().mean()) - 1.0) < 4 * (p / (1 - p) / n) ** 0.5, p   # E[y] = x
        scale = y.unique()[1].item()
        # the kept value: 1 / the keep probability of the 2**-16 grid, within 1e-5 of ATen's 1 / (1 - p)
        assert scale == pytest.approx(GRID / (GRID - round(p * GRID)), rel=1e-7)
        assert scale == pytest.approx(F.dropout(torch.ones(10_000), p, True).max().item(), rel=1e-5)
    x = torch.randn(300, 7, requires_grad=True)
    out = fast_dropout(x, 0.5)
    out.backward(torch.ones_like(out))
    mask = (out.detach() != 0).float()
    assert 0.4 < mask.mean() < 0.6
    assert torch.equal(x.grad, mask * 2.0) and torch.allclose(out.detach(), x.detach() * mask * 2.0)
    assert torch.equal(fast_dropout(x, 0.0), x) and not fast_dropout(x, 1.0).any()
    assert not fast_dropout(x, 1 - 2 ** -18).any()   # a keep probability that rounds to 0 keeps nothing


def test_fast_dropout_masks_follow_torch_seed_and_differ_between_calls():
    x = torch.ones(5, 1001)   # an element count that is not a multiple of 4 (4 masks per 64-bit draw)
    torch.manual_seed(7)
    a, b = fast_dropout(x, 0.3), fast_dropout(x, 0.3)
    torch.manual_seed(7)
    assert torch.equal(fast_dropout(x, 0.3), a) and torch.equal(fast_dropout(x, 0.3), b)
    assert not torch.equal(a, b)
    torch.manual_seed(8)
    assert not torch.equal(fast_dropout(x, 0.3), a)


def test_fast_dropout_reaches_the_attention_weights_of_our_attention():
    from mrhd.models.layers.attention import ProjectionFreeAttention

    torch.manual_seed(0)
    attn = ProjectionFreeAttention(16, 2, dropout=0.5)
    mha = nn.MultiheadAttention(16, 2, dropout=0.5)
    model = nn.ModuleList([attn, mha])
    q = torch.randn(6, 3, 16)
    attn.eval()
    reference = attn(q, q, q)
    assert use_fast_dropout(model) == 2
    assert attn.drop_weights is dropout_function and type(mha) is FastDropoutMultiheadAttention
    assert torch.equal(attn(q, q, q), reference)          # eval: no dropout
    attn.train()
    torch.manual_seed(3)
    first = attn(q, q, q)
    torch.manual_seed(3)
    assert torch.equal(attn(q, q, q), first) and not torch.allclose(first, reference)
    # the same forward with the weights dropped by hand with the mask the hook draws
    torch.manual_seed(3)
    weights, v = attn.masked_logits(q, q, q)
    weights = torch.softmax(weights - weights.max(dim=-1, keepdim=True)[0], dim=-1)
    torch.manual_seed(3)
    dropped = weights * keep_mask(weights.shape, 0.5, weights.dtype)
    by_hand = attn.out_proj(torch.bmm(dropped, v).transpose(0, 1).contiguous().view(6, 3, 16))
    assert torch.equal(first, by_hand)


def _attention_cases(batch_first: bool):
    """(query, key, value, key_padding_mask, attn_mask) in each way our models call attention."""
    torch.manual_seed(1)
    tgt, src, b, d = 7, 9, 3, 16
    x = torch.randn(tgt, b, d)
    mem = torch.randn(src, b, d)
    padding = torch.zeros(b, src, dtype=torch.bool)
    padding[0, -3:] = True
    blocked = torch.zeros(tgt, src, dtype=torch.bool)
    blocked[:, 0] = True
    cases = [(x, x, x, None, None),                                 # self-attention, one product
             (x, mem, mem, padding, None),                          # key is value: two products
             (x, mem + 1, mem, padding, blocked),                   # three products, both masks
             (x, x + 1, x, None, torch.randn(tgt, tgt)),            # a float attention mask
             (x, mem + 1, mem, padding.float() * -1e4, None)]       # a float padding mask
    if batch_first:
        cases = [swap_batch_axis(case[:3]) + case[3:] for case in cases]
    return cases



@pytest.mark.parametrize("batch_first", [False, True])
def test_fast_dropout_attention_is_torchs_attention_with_our_dropout(batch_first):
    """Without dropout the spelled-out path equals nn.MultiheadAttention's bit for bit (output and
    weights, in each projection grouping and mask form); in training its weights are dropped with
    the mask :func:`keep_mask` draws, and evaluation is torch's own forward."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, dropout=0.25, batch_first=batch_first)
    state = {k: v.clone() for k, v in mha.state_dict().items()}
    fast = nn.MultiheadAttention(16, 4, dropout=0.25, batch_first=batch_first)
    fast.load_state_dict(state)
    assert use_fast_dropout(fast) == 1 and type(fast) is FastDropoutMultiheadAttention
    assert all(torch.equal(state[k], v) for k, v in fast.state_dict().items())
    mha.eval()
    for query, key, value, padding, blocked in _attention_cases(batch_first):
        expected = mha(query, key, value, key_padding_mask=padding, attn_mask=blocked)
        fast.eval()
        assert all(torch.equal(a, b) for a, b in zip(fast(query, key, value, key_padding_mask=padding,
                                                          attn_mask=blocked), expected))
        fast.train()
        fast.dropout = 0.0         # the spelled-out path itself, with dropout switched off
        q, k, v = swap_batch_axis((query, key, value)) if batch_first else (query, key, value)
        assert (q is k) == (query is key) and (k is v) == (key is value)
        out, weights = fast.attend(q, k, v, padding, blocked, True)
        assert torch.equal(out.transpose(0, 1) if batch_first else out, expected[0])
        assert torch.equal(weights, expected[1])
        fast.dropout = 1e-9        # the training forward itself, with a dropout that keeps everything
        got = fast(query, key, value, key_padding_mask=padding, attn_mask=blocked)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        fast.dropout = 0.25
    # training: per-head weights dropped with keep_mask's mask, drawn after the same seed
    query, key, value, padding, blocked = _attention_cases(False)[1]
    plain = nn.MultiheadAttention(16, 4, dropout=0.25)
    plain.load_state_dict(state)
    use_fast_dropout(plain)
    plain.train()
    torch.manual_seed(5)
    out, per_head = plain(query, key, value, key_padding_mask=padding, average_attn_weights=False)
    plain.dropout = 0.0
    _, undropped = plain.attend(query, key, value, padding, None, False)
    torch.manual_seed(5)
    mask = keep_mask(undropped.reshape(-1, *undropped.shape[2:]).shape, 0.25, undropped.dtype)
    assert torch.equal(per_head, (undropped.reshape(mask.shape) * mask).view_as(per_head))
    assert 0.6 < float((per_head[:, :, :, :6] > 0).float().mean()) < 0.9   # ~1 - p of the unpadded keys kept
    out.sum().backward()
    assert plain.in_proj_weight.grad is not None and plain.out_proj.weight.grad is not None


def test_fast_dropout_leaves_attention_it_cannot_spell_out_alone():
    odd = nn.ModuleList([nn.MultiheadAttention(16, 2, dropout=0.1, kdim=8, vdim=8),
                         nn.MultiheadAttention(16, 2, dropout=0.1, add_bias_kv=True),
                         nn.MultiheadAttention(16, 2, dropout=0.1, add_zero_attn=True)])
    assert use_fast_dropout(odd) == 0
    assert all(type(m) is nn.MultiheadAttention for m in odd)


# ---- fast PReLU -----------------------------------------------------------------------------------
@pytest.mark.parametrize("autocast", [False, True])
def test_fast_prelu_equals_atens_forward_and_input_gradient(autocast):
    """Forward and input gradient bit for bit ATen's (float32, and bfloat16 under CPU autocast); the
    slope's gradient sums the same products in another order: within float32 rounding of a float64
    reference sum, which ATen's bfloat16 result is not."""
    torch.manual_seed(0)
    x = torch.randn(40, 8, 64)
    x[0, 0, :4] = 0.0                                    # the kink: x == 0 takes the slope's side
    grad = torch.randn(40, 8, 64, dtype=torch.bfloat16 if autocast else torch.float32)
    got = {}
    for fast in (False, True):
        act = nn.PReLU()
        with torch.no_grad():
            act.weight.fill_(0.2431)
        if fast:
            assert use_fast_prelu(act) == 1 and type(act) is FastPReLU
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = act(leaf)
        y.backward(grad)
        got[fast] = (y.detach(), leaf.grad, act.weight.grad)
    (y0, gx0, gw0), (y1, gx1, gw1) = got[False], got[True]
    assert y1.dtype == y0.dtype and torch.equal(y1, y0)
    assert gx1.dtype == gx0.dtype and torch.equal(gx1, gx0)
    xs = x.to(torch.bfloat16).double() if autocast else x.double()
    reference = float((xs.clamp(max=0) * grad.double()).sum())
    assert gw1.dtype == torch.float32 and gw1.item() == pytest.approx(reference, rel=1e-4)
    assert gw0.item() == pytest.approx(reference, rel=1e-2)


def test_fast_prelu_swaps_one_slope_modules_only_and_keeps_eval_and_state():
    model = nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.PReLU(num_parameters=4), nn.ReLU())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_fast_prelu(model) == 1
    assert type(model[1]) is FastPReLU and type(model[2]) is nn.PReLU
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    x = torch.randn(5, 4)
    model.eval()
    assert torch.equal(model[1](x), F.prelu(x, model[1].weight))
    with torch.no_grad():
        model.train()
        assert torch.equal(model[1](x), F.prelu(x, model[1].weight))


# ---- bfloat16 autocast on CPU ---------------------------------------------------------------------
def test_native_bfloat16_detection_agrees_with_the_cpu_flags():
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags line on this machine")
    assert speed.cpu_has_native_bfloat16() == bool({"avx512_bf16", "amx_bf16"} & set(flags))


@pytest.mark.parametrize("native", [False, True])
def test_cpu_autocast_follows_native_bfloat16(native, monkeypatch):
    monkeypatch.setattr(speed, "cpu_has_native_bfloat16", lambda: native)
    cpu = torch.device("cpu")
    assert plan_speed(load_train_config("qd_detr"), cpu).amp_dtype is (torch.bfloat16 if native else None)
    assert plan_speed(load_train_config("cg_detr"), cpu).amp_dtype is (torch.bfloat16 if native else None)
    assert plan_speed(load_train_config("tr_detr"), cpu).amp_dtype is None     # opt-in for the others (docs)
    assert plan_speed(load_train_config("tr_detr", cpu_amp=True), cpu).amp_dtype is (torch.bfloat16 if native else None)
    assert plan_speed(load_train_config("qd_detr", cpu_amp=False), cpu).amp_dtype is None
    assert plan_speed(load_train_config("qd_detr", amp=False), cpu).amp_dtype is None
    assert plan_speed(load_train_config("qd_detr", exact=True), cpu).amp_dtype is None


def test_cpu_autocast_step_keeps_float32_weights_and_learns(data, tmp_path, monkeypatch):
    """bfloat16 autocast on CPU (forced on, as on a CPU with native bfloat16): products in bfloat16,
    weights, gradients and losses in float32, and a few steps on one batch lower its loss."""
    monkeypatch.setattr(speed, "cpu_has_native_bfloat16", lambda: True)
    tiny = {k: v for k, v in TINY.items() if k != "t2v_layers"}
    tr = _trainer("qd_detr", data, tmp_path / "run", lr=1e-3, cpu_amp=True, model_config={**tiny, "dropout": 0.0})
    assert tr.amp_dtype is torch.bfloat16
    assert any(isinstance(m, FastPReLU) for m in tr.model.modules())
    batched = next(tr.epoch_batches())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear = next(m for m in tr.model.modules() if isinstance(m, nn.Linear))
        assert linear(torch.randn(2, linear.in_features)).dtype == torch.bfloat16
    losses = [float(tr.train_step(batched)) for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in tr.model.parameters())


@pytest.mark.parametrize("model", TRAINABLE)
def test_every_model_trains_under_cpu_autocast(model, tmp_path, monkeypatch):
    """Each model's forward, loss and backward run under bfloat16 autocast (as on a CPU with native
    bfloat16) on features of its own profile, with a finite loss and float32 gradients."""
    monkeypatch.setattr(speed, "cpu_has_native_bfloat16", lambda: True)
    own = make_synthetic(tmp_path / "data", load_profile(get_spec(model).default_profile),
                         SyntheticSpec(n_train=16, n_val=4, min_clips=8, max_clips=20, n_concepts=3))
    torch.manual_seed(0)
    tr = _trainer(model, own, tmp_path / "run", cpu_amp=True)
    assert tr.amp_dtype is torch.bfloat16
    loss = float(tr.train_step(next(tr.epoch_batches())))
    assert np.isfinite(loss)
    grads = [p.grad for p in tr.model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_fast_dropout_swaps_modules_only_and_is_identity_in_eval():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.2), nn.ReLU()))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_fast_dropout(model) == 2
    assert isinstance(model[1], FastDropout) and model[1].p == 0.3 and model[2][0].p == 0.2
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    x = torch.randn(5, 4)
    model.eval()
    assert torch.equal(model(x), F.relu(model[0](x)))


# ---- the exact path -------------------------------------------------------------------------------
def test_speed_plan_defaults_and_the_exact_path():
    cpu = torch.device("cpu")
    fast = plan_speed(load_train_config("qd_detr"), cpu)
    assert (fast.optimizer, fast.fast_dropout, fast.fast_prelu, fast.bucket_by_length, fast.compile) == \
        ("fused", True, True, True, False)
    assert fast.num_workers == default_workers(cpu) == 0 and fast.cache_features and fast.check_every == 1
    exact = plan_speed(load_train_config("qd_detr", exact=True), cpu)
    assert (exact.optimizer, exact.fast_dropout, exact.fast_prelu, exact.bucket_by_length, exact.compile,
            exact.amp_dtype) == ("loop", False, False, False, False, None)
    assert not plan_speed(load_train_config("cg_detr"), cpu).bucket_by_length
    assert not plan_speed(load_train_config("qd_detr", num_workers=2), cpu).cache_features
    with pytest.raises(MrhdError, match="optimizer kernel"):
        plan_speed(load_train_config("qd_detr", optimizer="adam8bit"), cpu)


def test_exact_path_steps_as_the_official_loop(data, tmp_path):
    """exact=True: plain nn.Dropout, shuffled batches, AdamW one tensor at a time; a step equals
    the official ``train_epoch`` body on the same batch and RNG, bit for bit."""
    tr = _trainer("qd_detr", data, tmp_path / "run", exact=True)
    assert not any(isinstance(m, FastDropout) for m in tr.model.modules())
    assert tr.optimizer.defaults["foreach"] is False and not tr.optimizer.defaults.get("fused")
    assert isinstance(tr.train_loader.sampler, torch.utils.data.RandomSampler)
    batched = next(tr.epoch_batches())
    ref_model = get_spec("qd_detr").build(tr.model_cfg)
    ref_model.load_state_dict(tr.model.state_dict())
    ref_model.train()
    ref_opt = torch.optim.AdamW([p for p in ref_model.parameters() if p.requires_grad], lr=tr.cfg.lr,
                                weight_decay=tr.cfg.weight_decay)
    state = torch.get_rng_state()
    ours = float(tr.train_step(batched))
    torch.set_rng_state(state)
    inputs, targets = prepare_batch(batched)
    loss_dict = tr.criterion(ref_model(**inputs), targets)
    total = sum(loss_dict[k] * tr.criterion.weight_dict[k] for k in loss_dict if k in tr.criterion.weight_dict)
    ref_opt.zero_grad()
    total.backward()
    nn.utils.clip_grad_norm_(ref_model.parameters(), tr.cfg.grad_clip)
    ref_opt.step()
    assert ours == float(total.detach())
    assert all(torch.equal(a, b) for a, b in zip(tr.model.state_dict().values(), ref_model.state_dict().values()))


def test_fused_adamw_follows_the_official_update(data, tmp_path):
    """Same update rule as the loop kernel; only the last bits of rounding differ."""
    loop = _trainer("moment_detr", data, tmp_path / "a", exact=True)
    fused = _trainer("moment_detr", data, tmp_path / "b", optimizer="fused", fast_dropout=False, amp=False)
    fused.model.load_state_dict(loop.model.state_dict())
    batches = [next(loop.epoch_batches()) for _ in range(1)] * 3
    for b in batches:
        state = torch.get_rng_state()
        loop.train_step(b)
        torch.set_rng_state(state)
        fused.train_step(b)
    for (k, a), b in zip(loop.model.state_dict().items(), fused.model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), k


def test_default_run_learns_and_resumes_exactly(data, tmp_path):
    """The fast defaults (fused AdamW, fast dropout, buckets) keep a run determined by its seed."""
    a = _trainer("qd_detr", data, tmp_path / "a", epochs=2)
    a.run()
    b = _trainer("qd_detr", data, tmp_path / "b", epochs=1)
    b.run()
    c = _trainer("qd_detr", data, tmp_path / "b", epochs=2, resume=True)
    c.run()
    assert b.step_losses + c.step_losses == a.step_losses
    assert all(np.isfinite(a.step_losses))


def test_divergence_is_reported_when_the_loss_is_read_back(data, tmp_path):
    tr = _trainer("moment_detr", data, tmp_path / "run")
    tr._pending.append(torch.tensor(float("nan")))
    with pytest.raises(MrhdError, match="diverged"):
        tr.sync_losses()


# ---- features in RAM, reads without attributes ----------------------------------------------------
def test_store_reader_keeps_reads_in_memory_within_the_budget(tmp_path):
    arrays = {f"v{i}": np.random.default_rng(i).normal(size=(5, 512)).astype(np.float16) for i in range(3)}
    path = write_store(tmp_path / "clip.h5", "clip", videos=arrays, dtype="float16")
    reader = StoreReader(path)
    reader.keep_in_memory(MemoryBudget(limit=2 * 5 * 512 * 2))   # room for two videos as stored
    first = {v: reader.read(v) for v in arrays}
    assert all(x.dtype == np.float32 and np.array_equal(x, arrays[v].astype(np.float32)) for v, x in first.items())
    first["v0"][:] = 0                                             # callers get copies
    reader._store.close_reader()
    path.rename(tmp_path / "gone.h5")                              # kept ones no longer need the file
    assert np.array_equal(reader.read("v0"), arrays["v0"].astype(np.float32))
    assert np.array_equal(reader.read("v1"), arrays["v1"].astype(np.float32))
    with pytest.raises(MrhdError):
        reader.read("v2")                                          # over the budget: read from disk
    import pickle
    assert pickle.loads(pickle.dumps(reader))._kept is None        # workers do not inherit the copies


def test_store_reads_an_entry_as_stored_without_its_attributes(tmp_path):
    path = write_store(tmp_path / "clip.h5", "clip", videos={"a": np.ones((2, 512)), "b": np.ones((3, 512))},
                       texts={7: np.ones((4, 512))}, pooled={7: np.ones(512)}, dtype="float16")
    store = FeatureStore(path)
    assert store.video_ids() == ["a", "b"] and store.query_ids() == ["7"]
    assert store.read_stored("b").dtype == np.float16 and store.read_stored("b").shape == (3, 512)
    assert store.read_stored("qid7").shape == (4, 512) and store.read_stored("nope") is None
    store.close_reader()


def test_mrhd_train_shortens_the_openmp_spin_before_torch_loads(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from mrhd.cli import main\n"
            "rc = main(['train', '--model', 'qd_detr', '--features', 'nowhere', '--out', 'run'])\n"
            "print(rc, 'torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    rc, torch_loaded, spin = out.stdout.split()
    from mrhd.commands.train import OPENMP_SPIN_ROUNDS

    assert rc != "0" and spin == str(OPENMP_SPIN_ROUNDS), out.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "GOMP_SPINCOUNT": "77"}, cwd=tmp_path)
    assert out.stdout.split()[2] == "77"           # the user's setting wins
