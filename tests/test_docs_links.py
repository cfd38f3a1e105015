"""The documentation cannot rot silently: every relative link, repository path (``mrhd/...``,
``tests/...``, ``docs/...``) and dotted name (``mrhd.x.y``) that README.md, docs/*.md and the model
cards mention exists, and every registered model has a card that docs/MODELS.md links."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from mrhd.models.registry import MODEL_MODULES

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "mrhd" / "models").glob("*/README.md")])

# docs/adding-a-model.md builds this package as its worked example; it is not in the repository
EXAMPLES = ("mrhd/models/toy_detr", "mrhd.models.toy_detr")

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w./$-])((?:mrhd|tests|docs|benchmarks|configs)/[\w./<>*{}-]*)")
DOTTED = re.compile(r"(?<![\w./-])((?:mrhd|tests)(?:\.\w+)+)")
FENCE = re.compile(r"^```")


def _rel(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


@cache
def _anchors(doc: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in doc.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


@cache
def _top_level_names(path: Path) -> frozenset[str]:
    """Names a module defines or imports at top level (and, for mrhd/__init__.py, its lazy names)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "_PUBLIC" for t in node.targets) \
                    and isinstance(node.value, ast.Dict):
                names.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def _dotted_exists(name: str) -> bool:
    """``a.b.c``: the longest prefix that is a module or package, then its next part is a name
    defined there (or a submodule)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if not module.is_file():
            continue
        rest = parts[i:]
        return not rest or rest[0] in _top_level_names(module) or (base / f"{rest[0]}.py").is_file() \
            or (base / rest[0]).is_dir()
    return False


def _mentions(doc: Path):
    """(kind, text) of every link target, path and dotted name in ``doc`` (code blocks included)."""
    text = doc.read_text()
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:", target):
            yield "link", target
    for path in PATH.findall(text):
        yield "path", path.rstrip(".,:;")
    for dotted in DOTTED.findall(text):
        yield "name", dotted


def _problems(doc: Path) -> list[str]:
    problems = []
    for kind, text in _mentions(doc):
        if text.startswith(EXAMPLES):
            continue
        if kind == "link":
            target, _, anchor = text.partition("#")
            dest = (doc.parent / target).resolve() if target else doc
            if not dest.exists():
                problems.append(f"link to missing {text}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                problems.append(f"link to missing heading {text}")
        elif kind == "path":
            if any(c in text for c in "<>*{}"):   # placeholders and globs: check the fixed part
                text = re.split(r"[<>*{}]", text)[0].rsplit("/", 1)[0]
            if text and not (ROOT / text).exists():
                problems.append(f"path {text} does not exist")
        elif not _dotted_exists(text):
            problems.append(f"name {text} does not exist")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_links_paths_and_names_exist(doc):
    assert _problems(doc) == [], _rel(doc)


def test_every_registered_model_has_a_card_linked_from_models_md():
    models_md = (ROOT / "docs" / "MODELS.md").read_text()
    for name, module in MODEL_MODULES.items():
        card = ROOT.joinpath(*module.split(".")) / "README.md"
        assert card.is_file(), f"{name}: no model card {card.relative_to(ROOT)}"
        assert f"../mrhd/models/{name}/README.md" in models_md, f"docs/MODELS.md does not link {name}'s card"


def test_the_checker_catches_rot(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("[a](missing.md) `mrhd/no_such.py` `mrhd.models.registry.NoSuchName` "
                   "[b](#nowhere) `mrhd/models/<name>/model.py` `mrhd.models.registry.ModelSpec`\n# Here\n")
    assert _problems(doc) == ["link to missing missing.md", "link to missing heading #nowhere",
                              "path mrhd/no_such.py does not exist",
                              "name mrhd.models.registry.NoSuchName does not exist"]


MERGE_MARKER = re.compile(r"^(<{7}|>{7})( |$)|^={7}$", re.MULTILINE)


def test_no_merge_conflict_left_in_a_tracked_text_file():
    """A merge that kept both sides' markers rendered as text on the front page once (README.md and
    docs/DESIGN.md); Python files would fail to import, the docs would not."""
    import subprocess

    files = subprocess.run(["git", "ls-files", "*.md", "*.py", "*.yaml", "*.toml", "*.txt", "*.cfg", ".ci/*"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert files, "git ls-files found nothing: not a checkout?"
    bad = []
    for name in files:
        path = ROOT / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            bad += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}" for m in MERGE_MARKER.finditer(text)]
    assert not bad, "merge conflict markers: " + ", ".join(bad)
