"""``model=custom``: any importable ``nn.Module`` class or factory function.

    dltrain model=custom model._target_=my_pkg.MyNet +model.width=64
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

from dltrain.errors import ConfigError
from dltrain.models.registry import MODELS

_PASSABLE = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _import(target: str, module_name: str) -> ModuleType:
    """Import ``module_name``, retrying once with the current directory on ``sys.path``:
    users run dltrain from the folder that holds their ``my_net.py``, and a console script
    does not put that folder on the path."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        error = err
    cwd = os.getcwd()
    if cwd not in sys.path:
        # Appended, not prepended: it must not shadow installed packages. It stays, so the
        # user's module can import its neighbours later.
        sys.path.append(cwd)
        importlib.invalidate_caches()  # the finders cache directory listings
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            error = err
    missing = error.name or module_name
    if not (module_name == missing or module_name.startswith(missing + ".")):
        # The user's module was found, but something it imports was not.
        raise ConfigError(f"model._target_={target}: its module imports {missing}, which is not installed: "
                          f"install it in this environment.") from error
    raise ConfigError(f"model._target_={target}: no module named {missing} in the current directory or on "
                      f"PYTHONPATH: check the dotted path, or run dltrain from the folder that holds it, "
                      f"or add that folder to PYTHONPATH.") from error


def _locate(target: str) -> Callable[..., Any]:
    """The callable at the dotted path ``target``."""
    module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"model._target_={target} is not a dotted import path: write it as module.Name, "
                          f"e.g. my_net.MyNet.")
    module = _import(target, module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=1)
        hint = f" (did you mean {module_name}.{close[0]}?)" if close else ""
        raise ConfigError(f"model._target_={target}: module {module_name} has no attribute {attr}{hint}: "
                          f"check the name.") from None
    if not callable(obj):
        raise ConfigError(f"model._target_={target} is a {type(obj).__name__}, not a class or function: "
                          f"point it at an nn.Module class or a function that returns one.")
    return obj


def _check_arguments(target: str, sig: inspect.Signature, call_kwargs: dict[str, Any]) -> None:
    """Name the keyword arguments that the callable refuses or misses, before calling it,
    so that a TypeError raised inside the user's own code keeps its traceback."""
    params = sig.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [name for name, p in params.items() if p.kind in _PASSABLE]
    unknown = [key for key in call_kwargs if not takes_any and key not in accepted]
    if unknown:
        keys = ", ".join(f"model.{key}" for key in unknown)
        options = ", ".join(accepted) or "none"
        raise ConfigError(f"model._target_={target} takes no argument {keys}: remove it, or set one it takes "
                          f"({options}) with +model.KEY=VALUE.")
    missing = [name for name, p in params.items() if p.default is inspect.Parameter.empty
               and p.kind in (*_PASSABLE, inspect.Parameter.POSITIONAL_ONLY) and name not in call_kwargs]
    if missing:
        keys = " ".join(f"+model.{name}=VALUE" for name in missing)
        raise ConfigError(f"model._target_={target} needs {', '.join(missing)}: add {keys}.")


# The user's module: it may take vocab_size (token ids), has its own layers, and its code is named by _target_.
@MODELS.register("custom", reads_tokens=True, regularization_layers=False, user_code=True)
def build_custom(input_shape: tuple[int, ...], num_outputs: int, _target_: str, vocab_size: int | None = None,
                 **kwargs: Any) -> nn.Module:
    """Import ``_target_`` and call it to build the model.

    ``input_shape``, ``num_outputs`` and (for text data) ``vocab_size`` are passed (by keyword)
    only when the callable takes them, by name or through ``**kwargs``; ``kwargs`` (the
    ``+model.KEY=VALUE`` keys) always are.

    Args:
        input_shape: shape of one example without the batch dimension.
        num_outputs: width of the output layer.
        _target_: dotted import path of an ``nn.Module`` class or a factory function, e.g.
            ``my_pkg.MyNet``; the current directory is searched too.
        vocab_size: number of token ids when the inputs are text (padding id 0), else None.
        **kwargs: keyword arguments for the callable.

    Returns:
        The module that the callable built.

    Raises:
        ConfigError: naming ``model._target_`` when the path does not import, is not callable,
            refuses or misses keyword arguments, or builds something that is not an ``nn.Module``.
    """
    factory = _locate(_target_)
    call_kwargs = dict(kwargs)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C extensions have none
        sig = None
    if sig is not None:
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        passed = {"input_shape": tuple(input_shape), "num_outputs": int(num_outputs), "vocab_size": vocab_size}
        for name, value in passed.items():
            param = sig.parameters.get(name)
            if value is not None and (takes_any or (param is not None and param.kind in _PASSABLE)):
                call_kwargs[name] = value
        _check_arguments(_target_, sig, call_kwargs)
        model = factory(**call_kwargs)
    else:
        try:
            model = factory(**call_kwargs)
        except TypeError as err:
            raise ConfigError(f"model._target_={_target_} refused its arguments ({err}): "
                              f"fix the +model.KEY=VALUE keys.") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model._target_={_target_} returned a {type(model).__name__}, not a torch.nn.Module: "
                          f"make it build and return the model.")
    return model
