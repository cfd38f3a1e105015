"""mrhd: video moment retrieval and highlight detection.

Two stages: ``mrhd.extract`` turns videos into per-clip features in HDF5 stores, and the grounding
models in ``mrhd.models`` (driven by ``mrhd.pipeline``) turn those features into moments and saliency.
"""

__version__ = "0.1.0"
