"""The package layout: which layer may import which, and one home for each shared helper.

Layers, lowest first: errors/io/paths (and annotations, devices) <- weights <- encoders <- features <-
models <- pipeline/inference/training/extract <- commands. A module may import its own layer and the
layers below; every import statement counts, function-level ones included (a lazy import is still a
dependency). Read with ``ast``, so nothing is imported here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mrhd"

# the bottom: may import only each other (and the package root, for __version__)
BOTTOM = ("mrhd.errors", "mrhd.io", "mrhd.paths", "mrhd.annotations", "mrhd.devices")

# package -> the mrhd packages its modules must not import
FORBIDDEN = {
    "mrhd.models": ("mrhd.extract", "mrhd.pipeline", "mrhd.inference", "mrhd.training", "mrhd.commands"),
    "mrhd.weights": ("mrhd.pipeline", "mrhd.inference", "mrhd.training", "mrhd.extract", "mrhd.models",
                     "mrhd.commands", "mrhd.encoders", "mrhd.features"),
    "mrhd.encoders": ("mrhd.features", "mrhd.models", "mrhd.extract", "mrhd.pipeline", "mrhd.inference",
                      "mrhd.training", "mrhd.commands"),
    "mrhd.features": ("mrhd.models", "mrhd.extract", "mrhd.pipeline", "mrhd.inference", "mrhd.training",
                      "mrhd.commands"),
    "mrhd.extract": ("mrhd.models", "mrhd.pipeline", "mrhd.inference", "mrhd.training", "mrhd.commands"),
}

# helpers that exist once: name -> the module that defines it. A top-level function of that name
# (or of a former copy's name, second table) anywhere else is a copy coming back.
HELPERS = {
    "read_jsonl": "mrhd.io", "read_jsonl_numbered": "mrhd.io", "jsonl_text": "mrhd.io",
    "write_atomic": "mrhd.io", "atomic_open": "mrhd.io", "atomic_path": "mrhd.io", "fsync_dir": "mrhd.io",
    "file_sha256": "mrhd.io", "json_safe": "mrhd.io", "check_writable": "mrhd.io",
    "parse_device": "mrhd.devices",
    "config_dir": "mrhd.paths",
    "load_checkpoint": "mrhd.weights.checkpoint", "unwrap_state_dict": "mrhd.weights.checkpoint",
    "resolve_encoder_weights": "mrhd.encoders.base", "encode_clips": "mrhd.encoders.base",
    "require_words": "mrhd.encoders.base",
    "normalise_pixels": "mrhd.encoders.pixels", "resize_frames": "mrhd.encoders.pixels",
    "synthetic_vocab": "mrhd.encoders.wordpiece",
    "encoder_of": "mrhd.encoders.streams", "stream_of_folder": "mrhd.encoders.streams",
}
FORMER_COPIES = {
    "sha256_of": "file_sha256", "write_text_atomic": "write_atomic", "_write_atomic": "write_atomic",
    "load_jsonl": "read_jsonl", "_device": "parse_device", "_check_device": "parse_device",
    "_fsync_dir": "fsync_dir",
}
# tables that exist once (as mrhd.encoders.streams.STREAMS and mrhd.paths.config_dir())
FORMER_TABLES = ("CONFIG_DIR", "STREAM_DIMS", "ENCODER_MODULES", "_STREAM_HINTS")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), filename=str(p))) for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path, tree: ast.Module) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth; ``from X import y``
    counts as X.y (y may be a module), relative imports resolved against the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_module_parses_and_is_found():
    assert "mrhd.io" in MODULES and "mrhd.models.registry" in MODULES and len(MODULES) > 100


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package):
    bad = []
    for name, (path, tree) in MODULES.items():
        if not _within(name, package):
            continue
        for line, target in _imports(name, path, tree):
            for forbidden in FORBIDDEN[package]:
                if _within(target, forbidden):
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, f"{package} must not import {', '.join(FORBIDDEN[package])}:\n" + "\n".join(bad)


def test_bottom_modules_import_nothing_above_them():
    bad = []
    for name in BOTTOM:
        path, tree = MODULES[name]
        for line, target in _imports(name, path, tree):
            if _within(target, "mrhd") and target != "mrhd.__version__" and \
                    not any(_within(target, low) for low in BOTTOM):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, "the bottom layer imports only itself:\n" + "\n".join(bad)


def test_each_shared_helper_has_one_home():
    homes = defaultdict(list)
    tables = []
    for name, (_, tree) in MODULES.items():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name in HELPERS or node.name in FORMER_COPIES:
                    homes[node.name].append(name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                tables += [f"{name}.{t.id}" for t in targets if isinstance(t, ast.Name) and t.id in FORMER_TABLES]
    misplaced = {helper: where for helper, where in homes.items()
                 if helper in FORMER_COPIES or where != [HELPERS[helper]]}
    assert not misplaced, ("a helper is defined again (use the one in its home module: "
                           f"{ {h: HELPERS.get(h, FORMER_COPIES.get(h)) for h in misplaced} }): {misplaced}")
    assert not tables, f"tables defined again (use mrhd.encoders.streams / mrhd.paths.config_dir): {tables}"
    assert all(homes[h] == [home] for h, home in HELPERS.items()), {h: homes[h] for h in HELPERS}
