"""Helpers the grounding-model tests share: finding a model's golden fixture cases, loading them,
and comparing our outputs, losses, prediction lines and state_dict keys with the authors' ones.

One copy here so every model's fidelity test reads the fixtures the same way; the options of the
comparisons keep each test's own tolerance (see the callers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch

from tests.conftest import _fixtures_dir, fixture_cases, model_fixture_cases, open_case

# ---- discovery and loading ----------------------------------------------------------------------

def model_cases(*models: str, exclude: tuple[str, ...] = (), required_file: str = "config.json") -> list:
    """Case folders of every model fixture set (``models/`` and ``staging/models/``) whose
    config.json names one of ``models`` (any model when none is given) and none of ``exclude``.

    Folders without a config.json are kept (``open_case`` then skips or fails with the reason);
    where nothing matches, the missing ``models/<first model>`` folder stands in, so the absence
    is reported instead of collecting nothing.
    """
    cases = []
    for param in model_fixture_cases(required_file):
        cfg_file = Path(param.values[0]) / "config.json"
        if not cfg_file.exists():
            cases.append(param)
            continue
        name = json.loads(cfg_file.read_text()).get("model")
        if (not models or name in models) and name not in exclude:
            cases.append(param)
    if cases:
        return cases
    if models:
        return fixture_cases(f"models/{models[0]}")
    return [pytest.param(_fixtures_dir() / "models" / "no-matching-case", id="no-matching-case")]


def read_config(case: Path) -> dict:
    """The fixture's config.json (official options, annotations, post-processor settings)."""
    return json.loads((case / "config.json").read_text())


def read_json(case: Path, name: str) -> dict:
    return json.loads((case / name).read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_pt(case: Path, name: str):
    """A tensor file of the fixture, on the CPU."""
    return torch.load(case / name, map_location="cpu")


def load_fixture_model(case: Path, config_from_opt: Callable, build: Callable,
                       convert_state_dict: Callable | None = None):
    """The small official model of a case, its weights loaded strictly, in eval mode.

    -> (case, config.json dict, config, model, inputs).
    """
    case = open_case(case, "config.json")
    config = read_config(case)
    cfg = config_from_opt(config["opt_small"])
    model = build(cfg).eval()
    state = load_pt(case, "state_dict.pt")
    if convert_state_dict is not None:
        state = convert_state_dict(state)
    model.load_state_dict(state, strict=True)
    return case, config, cfg, model, load_pt(case, "inputs.pt")


# ---- comparisons --------------------------------------------------------------------------------

def assert_tree_close(ours, ref, path: str = "outputs", *, atol: float = 1e-5, relative: bool = False,
                      exact_keys: bool = True, check_dtype: bool = True) -> None:
    """Nested dicts / lists / tensors equal: float tensors to ``atol`` (times the reference's
    magnitude where that exceeds 1 when ``relative``: fp32 sums of values ~10), other tensors and
    leaves exactly. ``exact_keys=False`` lets ``ours`` carry extra outputs."""
    def walk(a, b, where):
        if isinstance(b, dict):
            if exact_keys:
                assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
            for k, v in b.items():
                assert k in a, f"{where}: missing key {k}"
                walk(a[k], v, f"{where}.{k}")
        elif isinstance(b, (list, tuple)):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{i}]")
        elif torch.is_tensor(b):
            assert torch.is_tensor(a), where
            assert a.shape == b.shape, f"{where}: {tuple(a.shape)} != {tuple(b.shape)}"
            if check_dtype:
                assert a.dtype == b.dtype, f"{where}: {a.dtype} != {b.dtype}"
            if check_dtype and not b.is_floating_point():
                assert torch.equal(a, b), where
                return
            scale = max(1.0, float(b.float().abs().max())) if relative and b.numel() else 1.0
            torch.testing.assert_close(a.float(), b.float(), atol=atol * scale, rtol=0, msg=where)
        else:
            assert a == b, f"{where}: {a!r} != {b!r}"
    walk(ours, ref, path)


def tensor_leaves(tree, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted path, tensor) for every tensor in a nested dict / list output."""
    if torch.is_tensor(tree):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from tensor_leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from tensor_leaves(v, f"{prefix}[{i}]")


def loss_value(x) -> float:
    """A loss term as a float (terms may be plain numbers)."""
    return float(x.detach().sum()) if torch.is_tensor(x) else float(x)


def assert_losses_match(losses: dict, ref: dict[str, float]) -> None:
    """Every reference loss term to 1e-5 absolute (1e-6 relative)."""
    for name, value in ref.items():
        assert loss_value(losses[name]) == pytest.approx(value, abs=1e-5, rel=1e-6), name


def indices_as_lists(indices: dict) -> dict:
    """Matcher indices per layer as the fixture's losses.json stores them: [[query ids, target ids], ...]."""
    return {k: [[a.tolist(), b.tolist()] for a, b in v] for k, v in indices.items()}


def assert_lines_close(ours: list[dict], ref: list[dict], *, ids: Sequence[str] = ("qid", "query", "vid"),
                       window_atol: float | None = None, sort_windows: bool = False,
                       saliency_atol: float = 1e-3, saliency_rtol: float = 0.0) -> None:
    """Prediction lines from our own forward against the official ones: windows exactly
    (``window_atol=None``) or to ``window_atol`` seconds, optionally as sorted sets (ties reorder),
    saliency to the given tolerance (it is cast to fp16 upstream)."""
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        for key in ids:
            assert a[key] == b[key], f"line {i}: {key}"
        wa, wb = a["pred_relevant_windows"], b["pred_relevant_windows"]
        if sort_windows:
            wa, wb = sorted(map(tuple, wa)), sorted(map(tuple, wb))
        assert len(wa) == len(wb), f"line {i}: window count"
        if window_atol is None:
            assert wa == wb, f"line {i}: windows"
        else:
            torch.testing.assert_close(torch.tensor(wa), torch.tensor(wb), atol=window_atol, rtol=0)
        torch.testing.assert_close(torch.tensor(a["pred_saliency_scores"]), torch.tensor(b["pred_saliency_scores"]),
                                   atol=saliency_atol, rtol=saliency_rtol)


def state_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def assert_full_size_keys(model: torch.nn.Module, case: Path, convert_state_dict: Callable | None = None) -> None:
    """The full-size model's state_dict has exactly the official keys (keys_full.json) and shapes,
    after the model's key conversion where it has one."""
    ours = state_shapes(model)
    ref = {k: list(s) for k, s in json.loads((case / "keys_full.json").read_text())}
    if convert_state_dict is not None:
        ref = {k: list(v.shape) for k, v in convert_state_dict({k: torch.empty(s) for k, s in ref.items()}).items()}
    assert sorted(set(ref) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(ref)) == [], "unexpected keys"
    assert ours == ref


# ---- tiny random inputs -------------------------------------------------------------------------

def masked_batch(lengths_v: Sequence[int], lengths_t: Sequence[int], v_dim: int = 10, t_dim: int = 6, *,
                 seed: int = 0, pad_v: int = 0, pad_t: int = 0, video_first: bool = True,
                 zero_padding: bool = True) -> dict:
    """Random video / text features with float masks (1 = valid) for the given valid lengths, plus
    ``pad_v`` / ``pad_t`` extra padded positions. ``video_first`` is the draw order (each test keeps
    its own inputs); ``zero_padding`` zeroes the features at padded positions."""
    g = torch.Generator().manual_seed(seed)
    b, lv, lt = len(lengths_v), max(lengths_v) + pad_v, max(lengths_t) + pad_t
    if video_first:
        vid = torch.randn(b, lv, v_dim, generator=g)
        txt = torch.randn(b, lt, t_dim, generator=g)
    else:
        txt = torch.randn(b, lt, t_dim, generator=g)
        vid = torch.randn(b, lv, v_dim, generator=g)
    vmask, tmask = torch.zeros(b, lv), torch.zeros(b, lt)
    for i, (nv, nt) in enumerate(zip(lengths_v, lengths_t)):
        vmask[i, :nv] = 1
        tmask[i, :nt] = 1
    if zero_padding:
        vid, txt = vid * vmask[..., None], txt * tmask[..., None]
    return {"src_txt": txt, "src_txt_mask": tmask, "src_vid": vid, "src_vid_mask": vmask}


# ---- training properties ------------------------------------------------------------------------

def params_without_grad(model: torch.nn.Module, unused: Callable[[str], bool] | tuple[str, ...] = (),
                        trainable_only: bool = False) -> list[str]:
    """Parameters the backward pass did not reach, except those named ``unused`` (name prefixes or a
    predicate): the ones kept only for checkpoint compatibility."""
    skip = unused if callable(unused) else (lambda name: name.startswith(unused))
    return [n for n, p in model.named_parameters()
            if (p.requires_grad or not trainable_only) and p.grad is None and not skip(n)]


def first_and_last_loss(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], steps: int,
                        lr: float = 1e-3) -> tuple[float, float]:
    """Adam on ``loss_fn()`` for ``steps`` steps -> (first loss, last loss)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = last = None
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        last = float(loss.detach())
        first = last if first is None else first
        loss.backward()
        opt.step()
    return first, last
