"""The dataset registry: ``data=NAME`` calls ``DATASETS.get(NAME)(seed=..., **options)``."""

from dltrain.registry import Registry

DATASETS = Registry("data")
