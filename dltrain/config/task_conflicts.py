"""A model its task cannot train, data a task cannot read, attention heads that do not divide the
width: told without torch, as the config is checked, before a run directory is made.

The registries' facts live with their builders, whose modules import torch; the few facts these
checks read are restated here (``tests/test_task_checks.py`` checks them against the registries:
an option registered with other facts fails it until its line here is added).
"""

from __future__ import annotations

from omegaconf import DictConfig

from dltrain.errors import ConfigError

#: ``ModelFacts.tasks`` of every ``model=`` option (a model registered from Python is not here: the
#: build step checks it with its registration's facts).
MODEL_TASKS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("cnn", "custom", "gru", "lenet5", "lstm", "mlp", "mnist_net", "mnist_rnn", "notes_cnn",
                     "resnet_small", "rnn", "sequential", "torchvision", "transformer", "vgg_small"), ("supervised",)),
    "autoencoder": ("autoencoder",), "dcgan": ("gan",),
}
#: ``TaskFacts.default_model``: the model each task's preset selects.
TASK_MODELS: dict[str, str] = {"autoencoder": "autoencoder", "gan": "dcgan"}
#: ``TaskFacts.inputs`` of the tasks that read some kinds of input only.
TASK_INPUTS: dict[str, tuple[str, ...]] = {"gan": ("images", "ink_counts")}
#: ``DatasetFacts.inputs`` of every ``data=`` option (None: none of the kinds a model or task asks for).
DATA_INPUTS: dict[str, str | None] = {
    "chirp": None, "cifar10": "images", "csv": "table", "digits": "ink_counts", "fashion_mnist": "images",
    "image_folder": "images", "mnist": "images", "moons": "points", "sine": "points", "spirals": "points",
    "svhn": "images", "text_csv": "text", "xor": "points",
}


def refuse_model_task(task: str, model: str, model_tasks: tuple[str, ...], default_model: str | None) -> None:
    """A model that cannot serve ``task=task`` (``model_tasks``: the tasks it serves) is one line
    naming both and what to use instead (``default_model``: the task's own model).

    Raises:
        ConfigError: the model does not serve the task.
    """
    if task in model_tasks:
        return
    serves = " or ".join(f"task={name}" for name in model_tasks)
    instead = f"use model={default_model} (task={task}'s own: drop model=)" if default_model else f"use {serves}"
    raise ConfigError(f"model={model} cannot be trained by task={task} (it serves {serves}): {instead}.")


def refuse_data(task: str, data: str, data_inputs: str | None, task_inputs: tuple[str, ...] | None,
                datasets: dict[str, str | None]) -> None:
    """Data whose kind of input ``task=task`` cannot train on (``task_inputs``) is one line naming
    the data that would do (``datasets``: each ``data=`` option's kind of input).

    Raises:
        ConfigError: naming ``data=`` and what to use.
    """
    if task_inputs is None or data_inputs in task_inputs:
        return
    fits = sorted(name for name, kind in datasets.items() if kind in task_inputs)
    gives = {"table": "table rows", "text": "texts", None: "sequences"}.get(data_inputs, data_inputs)  # as words
    raise ConfigError(f"task={task} trains on {' or '.join(task_inputs)}, and data={data} gives "
                      f"{gives}: use data={', '.join(fits[:-1])} or {fits[-1]}, or another task=.")


def check_task_options(cfg: DictConfig) -> None:
    """The checks of this module on a composed config (a node missing: nothing to check).

    Raises:
        ConfigError: one line naming the keys and what to do.
    """
    task, model, data = (cfg.get(group) for group in ("task", "model", "data"))
    if task is None or model is None or data is None:
        return
    name = str(task.get("name", "supervised"))
    if name != "supervised" and name not in TASK_MODELS:
        return  # a task registered elsewhere: the build step checks it with the registries' own facts
    if str(model.name) in MODEL_TASKS:  # not a model registered from Python: the build step checks those
        refuse_model_task(name, str(model.name), MODEL_TASKS[str(model.name)], TASK_MODELS.get(name))
    if data.get("name") in DATA_INPUTS:
        refuse_data(name, str(data.name), DATA_INPUTS[str(data.name)], TASK_INPUTS.get(name), DATA_INPUTS)
    d_model, heads = model.get("d_model"), model.get("num_heads")
    if isinstance(d_model, int) and isinstance(heads, int) and heads >= 1 and d_model % heads:
        fits = ", ".join(str(n) for n in range(1, d_model + 1) if d_model % n == 0)
        raise ConfigError(f"model.num_heads={heads} does not divide model.d_model={d_model} (each head reads "
                          f"d_model / num_heads features): set model.num_heads to one of {fits} or model.d_model "
                          "to a multiple of it.")
