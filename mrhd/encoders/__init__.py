"""Frozen encoders, one per stream, behind the small interface of :mod:`mrhd.encoders.base`."""
