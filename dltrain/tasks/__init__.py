"""Training objectives (``task=``): what a training step computes. Every module of this
package is imported here, which registers its tasks: a new task is its module, its schema
and its preset (``conf/task/``)."""

import importlib
import pkgutil

from dltrain.tasks.base import TASKS, Task

for _module in pkgutil.iter_modules(__path__):  # registration
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task"]
