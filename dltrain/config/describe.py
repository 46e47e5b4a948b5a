"""A config error in one line: what Hydra or OmegaConf raised while composing a config
(an unknown key or option, a wrong type, an override it cannot parse, a broken YAML file of
the user's), said as the key at fault and what to do.

Used by :func:`dltrain.config.compose.compose` for Python callers and by the command line's
error boundary, which also passes the command line so that a value is quoted as typed.
This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from dltrain.config.search_path import config_file, file_naming, file_setting, options_of
from dltrain.config.suggest import did_you_mean, override_key, parsed_values, unknown_option
from dltrain.config.value_types import describe_type_error
from dltrain.messages import describe_yaml_error, find_yaml_error, quoting_hint

#: Launchers and sweepers that are optional extras of dltrain: the extra that installs each.
PLUGIN_EXTRAS = {"hydra/launcher=joblib": "joblib", "hydra/sweeper=optuna": "optuna",
                 "hydra/launcher=submitit_slurm": "submitit", "hydra/launcher=submitit_local": "submitit"}


def describe_config_error(err: BaseException, command_line: Sequence[str] = ()) -> str | None:
    """One line for an error composing a config (naming the key and what to do), None when
    ``err`` is no such error. ``command_line``: the overrides as the user typed them."""
    if (yaml_error := find_yaml_error(err)) is not None:  # a config file of the user's (--config-dir)
        return describe_yaml_error(yaml_error)
    if isinstance(err, RecursionError):  # files of the user's that start from each other
        return ("the defaults lists of your config files name each other in a loop: start a preset of yours from "
                "its schema (`- /schema_model_mlp@_here_` for a model=mlp preset) or from a packaged preset")
    if isinstance(err, MissingConfigException):
        found = re.search(r"Could not (find|load) '([^']+)'", str(err))
        if found and (err.options is not None or found.group(1) == "load"):
            group, _, option = found.group(2).rpartition("/")
            extra = PLUGIN_EXTRAS.get(f"{group}={option}")
            if extra:
                return f"{group}={option} needs a Hydra plugin that is not installed: pip install 'dltrain[{extra}]'."
            typed = _typed_values(group, command_line)
            options = sorted(err.options) if err.options is not None else options_of(group)
            message = unknown_option(group, option, options, typed)
            # Named in a defaults list of the user's, not on the command line: that file says it.
            in_file = None if typed and option in typed else file_naming(group, option)
            return f"{in_file}: {message}" if in_file else message
        return one_line(str(err))
    if isinstance(err, OverrideParseException):
        text = one_line(str(err))
        override = getattr(err, "override", "") or ""
        hint = quoting_hint(override)
        if hint is not None:
            # Hydra reads name(...) as one of its sweep functions, a space ends the value and
            # characters such as ; , = [ ] are its syntax: a quoted value is read as it is.
            return f"{override} cannot be read as written ({text}): quote the value, e.g. {hint}."
        return text + " (write overrides as key=value)"
    if isinstance(err, (ConfigCompositionException, OmegaConfBaseException)):
        message = _describe_composition_error(err, command_line)
        in_file = _failing_file(err)
        return f"{in_file}: {message}" if in_file and not message.startswith("In '") else message
    return None


def _failing_file(err: BaseException) -> str | None:
    """The config file Hydra was composing when ``err`` happened (``In 'model/mine': ...``)."""
    found = re.match(r"In '([^']+)':", str(err))
    return config_file(found.group(1)) if found else None


def name_the_file(err: BaseException, cfg: DictConfig) -> str:
    """The one line of a check that failed on the composed ``cfg`` (with Hydra's node), led by the
    user's file that set the value at fault when no override of the command line did."""
    message = one_line(str(err))
    key = re.match(r"[\w.\[\]]+", message)
    in_file = file_setting(cfg, key.group(0)) if key else None
    return f"{in_file}: {message}" if in_file else message


def _describe_composition_error(err: BaseException, command_line: Sequence[str]) -> str:
    # A config file's own error (In 'model/mine': ...) is the exception Hydra was handling.
    inner = err.__cause__ or (err.__context__ if isinstance(err, ConfigCompositionException) else None)
    cause = inner if isinstance(inner, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        schema = getattr(cause, "object_type", None)
        known = _known_keys(schema)
        if key.rsplit(".", 1)[-1] in known:  # a key the schema has, removed with ~key
            return f"{key} has no value: dltrain needs it, so set it (key=value) instead of removing it."
        if getattr(schema, "ALLOWS_EXTRA_KEYS", False):  # model=custom: the user's own keys
            return f"{key} is not a key of model=custom: add your module's keys with a plus, +{key}=VALUE."
        hint = f" (known keys there: {', '.join(known)})" if known else ""
        parent = getattr(cause, "parent_node", None)
        todo = _where_else(_as_typed(err, key, command_line),
                           parent._get_root() if isinstance(parent, DictConfig) else None)
        # A node of the user's own keys inside an option (logger.mlflow.tags, not a group): a new key takes a plus.
        if todo is None and schema is dict and "." in key.rpartition(".")[0]:
            typed = _typed_override(err, key, command_line).lstrip("+")
            return (f"{key} is not a config key yet: {key.rpartition('.')[0]} takes keys of your own with a plus, "
                    f"+{typed if '=' in typed else key + '=VALUE'}.")
        if todo is None and isinstance(parent, DictConfig):
            if meant := did_you_mean(_typed_override(err, key, command_line), parent._get_root()):
                return f"{key} is not a config key: {meant}{hint}{'.' if hint else ''}"  # a question ends itself
        return f"{key} is not a config key{hint}: {todo or 'check the spelling'}."
    if isinstance(cause, OmegaConfBaseException) and key:
        msg = one_line(getattr(cause, "msg", str(cause)))
        if "does not support deletion" in msg:
            return f"{key} cannot be removed: dltrain needs it, so set it ({key}=...) instead."
        if "is not a ListConfig" in msg:
            value = getattr(cause, "value", "...")
            return f"{key}={value} is not a list: write it in brackets, e.g. {key}=[{value}]."
        if isinstance(cause, ValidationError) and (
                described := describe_type_error(cause, _typed_value(key, command_line))):
            return described
        return f"{key}: {msg}"
    return one_line(str(err))


def _typed_override(err: BaseException, key: str, command_line: Sequence[str]) -> str:
    """The override the user typed that names the unknown ``key``: as on the command line
    (all of a sweep's values, where Hydra names only the first), else as Hydra quotes it,
    else the key alone."""
    found = re.search(r"To append to your config use \+(.+)", str(err))
    typed = found.group(1) if found else key
    typed_key = typed.partition("=")[0]
    return next((arg for arg in command_line if override_key(arg) == typed_key), typed)


def _as_typed(err: BaseException, key: str, command_line: Sequence[str]) -> str:
    """The unknown ``key`` as the override names it: ``logger.mlflow.tracking_uri`` where the
    error names only the first node missing (``logger.mlflow``)."""
    typed = override_key(_typed_override(err, key, command_line))
    return typed if typed.startswith(key + ".") else key


def _typed_value(key: str, command_line: Sequence[str]) -> str | None:
    """The value the command line gives ``key`` as typed (``1e3``), when it is one value."""
    typed = next((arg.partition("=")[2] for arg in command_line if override_key(arg) == key), None)
    return typed if typed is not None and len(parsed_values(key, typed) or []) == 1 else None


def _typed_values(group: str, command_line: Sequence[str]) -> list[str] | None:
    """The options the command line gives ``group``: all of a sweep's (``optim=SGD,adam``)."""
    typed = next((arg for arg in command_line if override_key(arg) == group), None)
    return [str(v) for v in parsed_values(group, typed.partition("=")[2]) or []] if typed else None


def _where_else(key: str, root: DictConfig | None = None) -> str | None:
    """What to do about an unknown key: the option of its group that has it, or the
    ``regularization.*`` key meant; None when neither. ``root``: the config composed so far."""
    from dltrain.config.schemas import GROUP_SCHEMAS, MANY_OPTION_GROUPS, RegularizationConfig

    group, _, leaf = key.partition(".")
    if group in MANY_OPTION_GROUPS:
        return _option_to_add(group, leaf, root)
    owners = [option for option, schema in GROUP_SCHEMAS.get(group, {}).items() if leaf in _known_keys(schema)]
    hints = []
    if owners:
        hints.append(f"only {group}={', '.join(owners)} {'has' if len(owners) == 1 else 'have'} it")
    if group in GROUP_SCHEMAS and leaf in _known_keys(RegularizationConfig):
        hints.append(f"for this {group} set regularization.{leaf}")
    return "; ".join(hints) or None


def _option_to_add(group: str, leaf: str, root: DictConfig | None) -> str | None:
    """For a group of several options at once (``logger``), a key of an option not chosen
    (``logger.mlflow.tracking_uri`` without ``logger=mlflow``): how to choose it. None when the
    option is chosen or no one option has the key (a misspelt one: did-you-mean says which)."""
    from dltrain.config.schemas import GROUP_SCHEMAS

    node = root.get(group) if root is not None else None
    chosen = list(node) if isinstance(node, DictConfig) else []
    option, _, rest = leaf.partition(".")
    if option not in GROUP_SCHEMAS[group]:  # logger.tracking_uri: the key of which option?
        owners = [name for name, schema in GROUP_SCHEMAS[group].items() if leaf in _known_keys(schema)]
        option, rest = (owners[0], leaf) if len(owners) == 1 else ("", "")
    if not option or option in chosen or (rest and rest.partition(".")[0] not in _known_keys(
            GROUP_SCHEMAS[group][option])):
        return None
    both = f"{group}=[{','.join([*chosen, option])}]"
    return f"choose {group}={option} (or {both} for both) and set {group}.{option}.{rest or 'KEY'}"


def _known_keys(schema: Any) -> list[str]:
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return [f.name for f in dataclasses.fields(schema)]
    return []


def one_line(text: str) -> str:
    """The first line of ``text`` (``unknown error`` when it is empty)."""
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
