"""Shared test setup: fixture locations, markers and the CI rule for missing golden data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Tests run on a 2-core machine beside other jobs; keep torch from oversubscribing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _shared_dir() -> Path:
    env = os.environ.get("MRHD_SHARED")
    return Path(env).expanduser().resolve() if env else (ROOT.parent / "shared").resolve()


def _fixtures_dir() -> Path:
    env = os.environ.get("MRHD_FIXTURES")
    return Path(env).expanduser().resolve() if env else _shared_dir() / "fixtures"


def require_dir(path: Path, what: str) -> Path:
    """Skip with a visible reason when golden data is absent; fail instead when CI=true."""
    if path.is_dir():
        return path
    msg = f"{what} not found at {path} (set MRHD_SHARED or MRHD_FIXTURES)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``$MRHD_SHARED`` (default ``../shared`` beside the repository)."""
    return require_dir(_shared_dir(), "shared folder")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``$MRHD_FIXTURES`` (default ``$MRHD_SHARED/fixtures``)."""
    return require_dir(_fixtures_dir(), "golden fixtures")


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    """Public annotation files (``$MRHD_SHARED/data``)."""
    return require_dir(shared_dir / "data", "annotation data")


def fixture_cases(subdir: str, required_file: str | None = None) -> list:
    """Case folders under ``$MRHD_FIXTURES/<subdir>`` as pytest params, discovered at collection.

    Where the folder is absent this yields one param that skips (or fails under CI=true) with the
    reason, so a missing fixture set is visible in the report rather than silently collecting nothing.
    """
    base = _fixtures_dir() / subdir
    if not base.is_dir():
        return [pytest.param(base, id=f"missing-{subdir.replace('/', '-')}")]
    cases = sorted(p for p in base.iterdir() if p.is_dir()
                   and (required_file is None or (p / required_file).exists()))
    return [pytest.param(p, id=p.name) for p in cases] or [pytest.param(base, id=f"empty-{subdir}")]


# Model fixture sets: the checked ones and staging/ (models whose tests are new); both are discovered.
MODEL_FIXTURE_SETS = ("models", "staging/models")


def model_fixture_cases(required_file: str | None = None) -> list:
    """Case folders of every model fixture set under ``$MRHD_FIXTURES`` (see
    :data:`MODEL_FIXTURE_SETS`), as pytest params; ids are the folder names (``staging-<name>`` for
    staging). Where no set exists, one param that skips (fails under CI=true) says so."""
    base = _fixtures_dir()
    params = []
    for subdir in MODEL_FIXTURE_SETS:
        folder = base / subdir
        if not folder.is_dir():
            continue
        prefix = "" if subdir == "models" else subdir.split("/")[0] + "-"
        params += [pytest.param(p, id=prefix + p.name) for p in sorted(folder.iterdir())
                   if p.is_dir() and (required_file is None or (p / required_file).exists())]
    return params or [pytest.param(base / "models", id="missing-models")]


def open_case(case: Path, required_file: str) -> Path:
    """Inside a test: the case folder, or skip/fail where it (or its key file) is missing."""
    require_dir(case, f"fixture folder {case.name}")
    if not (case / required_file).exists():
        msg = f"{case} has no {required_file}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return case


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """The suite shares 2 cores with other jobs; one torch thread is faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
