"""mrhd: video moment retrieval and highlight detection.

Two stages: ``mrhd.extract`` turns videos into per-clip features in HDF5 stores
(``mrhd.features``), and the grounding models in ``mrhd.models`` turn those features into moments
and saliency (``mrhd.inference`` predicts, ``mrhd.training`` trains, ``mrhd.pipeline`` holds the
datasets and the official metrics). The names below are the public Python API; they load lazily
so that ``import mrhd`` stays light.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "Predictor": "mrhd.inference.predict",
    "FeatureStore": "mrhd.features.store",
    "evaluate": "mrhd.pipeline.evaluate",
    "create_model": "mrhd.models.registry",
    "get_spec": "mrhd.models.registry",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mrhd' has no attribute {name!r}")
