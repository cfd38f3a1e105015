"""The feature store under the name the README gave it before the store moved to
:mod:`mrhd.features.store` (users' scripts import ``mrhd.extract.store.FeatureStore``)."""

from mrhd.features.store import FeatureStore

__all__ = ["FeatureStore"]
