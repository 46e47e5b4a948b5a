"""Name -> builder registries, one per config group.

The option a user types (``model=mlp``) is the name a builder was registered under, so
adding an option is one decorated function plus one YAML preset, and one parametrized
test walks every registry.

What the rest of dltrain needs to know about an option (a model that reads token ids, an
optimizer that needs a closure) is registered with it as *facts*, one frozen dataclass per
registry, so code outside the option's own module asks ``REGISTRY.facts(name).closure`` and
never tests the option's name: a new option declares its facts where it is registered and
needs no edit anywhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from dltrain.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class NoFacts:
    """The facts of a registry whose options declare none."""


FactsT = TypeVar("FactsT")


class Registry(Generic[FactsT]):
    """Maps option names of one config group to the functions that build them, and to the
    facts registered with each.

    Args:
        group: the config group this registry serves (``model``, ``optim``, ...); used
            in error messages so they name the key a user typed.
        facts: the frozen dataclass of this group's facts; every field has a default, so an
            option declares only the facts in which it differs.
    """

    def __init__(self, group: str, facts: type[FactsT] = NoFacts) -> None:  # type: ignore[assignment]
        self.group = group
        self.facts_type = facts
        self._builders: dict[str, Callable[..., Any]] = {}
        self._facts: dict[str, FactsT] = {}

    def register(self, name: str, **facts: Any) -> Callable[[F], F]:
        """Decorator: register ``fn`` under ``name`` with ``facts`` (fields of this registry's
        facts dataclass); a name can be registered once.

        Raises:
            ValueError: at import time, for a name registered twice or a fact this registry
                does not know (a typo would otherwise silently keep the default).
        """
        known = {f.name for f in dataclasses.fields(self.facts_type)}
        unknown = sorted(set(facts) - known)
        if unknown:
            raise ValueError(f"{self.group} option {name!r} is registered with unknown facts {unknown}: "
                             f"{self.facts_type.__name__} has {sorted(known)}")
        option_facts = self.facts_type(**facts)

        def decorator(fn: F) -> F:
            if name in self._builders:
                raise ValueError(f"{self.group} option {name!r} is registered twice")
            self._builders[name] = fn
            self._facts[name] = option_facts
            return fn

        return decorator

    def unregister(self, name: str) -> None:
        """Remove option ``name`` (for tests that register a throwaway option)."""
        del self._builders[name]
        del self._facts[name]

    @contextmanager
    def registered(self, name: str, fn: Callable[..., Any], **facts: Any) -> Iterator[None]:
        """Register ``fn`` under ``name`` for the duration of a ``with`` block (for tests)."""
        self.register(name, **facts)(fn)
        try:
            yield
        finally:
            self.unregister(name)

    def facts(self, name: str) -> FactsT:
        """The facts registered with option ``name``.

        Raises:
            ConfigError: for an unknown name, listing the known ones.
        """
        self.get(name)
        return self._facts[name]

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered under ``name``.

        Raises:
            ConfigError: for an unknown name, listing the known ones.
        """
        try:
            return self._builders[name]
        except KeyError:
            from dltrain.config.suggest import unknown_option  # the config schemas: only for this message

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
