"""Model builders. Each takes ``input_shape`` and ``num_outputs`` (inferred from the data)
plus its own keyword arguments, and knows nothing of configs. Every module of this package
is imported here, which registers its builders: a new model is its module, its schema and its
preset."""

import importlib
import pkgutil

from dltrain.models.registry import MODELS
from dltrain.models.summary import summarize

for _module in pkgutil.iter_modules(__path__):  # registration
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "summarize"]
