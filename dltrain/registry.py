"""Name -> builder registries, one per config group.

The option a user types (``model=mlp``) is the name a builder was registered under, so
adding an option is one decorated function plus one YAML preset, and one parametrized
test walks every registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dltrain.errors import ConfigError
from dltrain.config.suggest import unknown_option

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Maps option names of one config group to the functions that build them.

    Args:
        group: the config group this registry serves (``model``, ``optim``, ...); used
            in error messages so they name the key a user typed.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register ``fn`` under ``name``; a name can be registered once."""

        def decorator(fn: F) -> F:
            if name in self._builders:
                raise ValueError(f"{self.group} option {name!r} is registered twice")
            self._builders[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered under ``name``.

        Raises:
            ConfigError: for an unknown name, listing the known ones.
        """
        try:
            return self._builders[name]
        except KeyError:
            raise ConfigError(unknown_option(self.group, name, self.names())) from None

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered under ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __repr__(self) -> str:
        return f"Registry({self.group!r}, {self.names()})"
