"""The Python names the README documents stay importable where it says."""

import subprocess
import sys


def test_readme_names_import():
    import mrhd
    from mrhd.extract.store import FeatureStore as OldPathStore
    from mrhd.features.store import FeatureStore
    from mrhd.inference.predict import Predictor
    from mrhd.pipeline.evaluate import evaluate

    assert mrhd.Predictor is Predictor and mrhd.FeatureStore is FeatureStore is OldPathStore
    assert mrhd.evaluate is evaluate and callable(mrhd.create_model) and callable(mrhd.get_spec)


def test_import_mrhd_stays_light():
    code = "import sys, mrhd; print(sorted(m for m in ('torch', 'h5py', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
