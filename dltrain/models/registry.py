"""The model registry: ``model=NAME`` builds ``MODELS.get(NAME)``."""

from dltrain.registry import Registry

MODELS = Registry("model")
