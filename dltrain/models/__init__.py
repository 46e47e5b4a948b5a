"""Model builders. Each takes ``input_shape`` and ``num_outputs`` (inferred from the data)
plus its own keyword arguments, and knows nothing of configs."""

from dltrain.models import cnn, custom, mlp, recurrent  # noqa: F401  (register the builders)
from dltrain.models.registry import MODELS
from dltrain.models.summary import summarize

__all__ = ["MODELS", "summarize"]
