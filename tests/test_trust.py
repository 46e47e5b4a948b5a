"""Nothing a checkpoint stores becomes an import, a call or an evaluated expression without
the user's say-so: ``resume=``, ``dltrain-eval`` and ``dltrain-predict`` refuse crafted
checkpoints in one line, and the code they name never runs.

The crafted checkpoints are real ones (an in-process run each) with their config edited and
saved again with ``torch.save``, as an attacker would.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dltrain import compose, train
from dltrain.data import expression
from dltrain.data.synthetic import build_sine
from dltrain.errors import ConfigError, UserError
from dltrain.inference import evaluate as eval_tool
from dltrain.inference import predict as predict_tool
from dltrain.inference.restore import load_model
from tests.conftest import run_cli, tool_error

NET = "tests.nets.TinyNet"
MARKER = "pwned.txt"  # what the crafted code creates, in the working directory
EVIL_MODULE = """from pathlib import Path
Path("pwned.txt").write_text("top-level code ran")
from tests.nets import TinyNet as Net
"""
#: A crafted ``model`` node per attack: the command runs if the target is ever called.
EVIL_MODELS = {
    "os.system": {"name": "custom", "_target_": "os.system", "command": f"id > {MARKER}"},
    "subprocess.getoutput": {"name": "custom", "_target_": "subprocess.getoutput", "cmd": f"id > {MARKER}"},
    "evilmod.Net": {"name": "custom", "_target_": "evilmod.Net"},
}


@pytest.fixture(scope="module")
def custom_ckpt(tmp_path_factory) -> Path:
    """best.pt of a one-epoch xor run of a custom model (``tests.nets.TinyNet``) with a key of
    its own (``+model.width=8``), which a rebuild must pass on."""
    run = tmp_path_factory.mktemp("custom") / "run"
    train(compose(["device=cpu", "data=xor", "data.copies=25", "trainer.max_epochs=1", "model=custom",
                   f"model._target_={NET}", "+model.width=8"]), run_dir=run)
    return run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def sine_ckpt(tmp_path_factory) -> Path:
    """best.pt of a one-epoch sine run of the built-in MLP."""
    run = tmp_path_factory.mktemp("sine") / "run"
    train(compose(["device=cpu", "data=sine", "data.samples=100", "model.hidden=[8]", "trainer.max_epochs=1"]),
          run_dir=run)
    return run / "checkpoints" / "best.pt"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An unpacked download as the working directory: it holds ``evilmod.py`` and one input
    row; ``evilmod`` is forgotten afterwards, and ``sys.path`` restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "evilmod.py").write_text(EVIL_MODULE)
    (tmp_path / "points.csv").write_text("a,b\n0.1,0.9\n0.8,0.2\n")
    yield tmp_path
    sys.modules.pop("evilmod", None)


def craft(source: Path, dest: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """``source`` with ``edit`` applied to its stored config, saved as ``dest``."""
    state = torch.load(source, weights_only=True)
    edit(state["config"])
    torch.save(state, dest)
    return dest


def set_key(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets the dotted ``key`` of a stored config."""
    def edit(config: dict[str, Any]) -> None:
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return edit


def refusal(entry: str, ckpt: Path, workdir: Path, capsys, *extra: str) -> str:
    """The one line with which ``entry`` (resume, eval or predict) refuses ``ckpt``."""
    if entry == "resume":
        with pytest.raises(UserError) as err:
            train(compose(["device=cpu", f"resume={ckpt}", "trainer.max_epochs=2", *extra]),
                  run_dir=workdir / "resumed")
        message = str(err.value)
        assert "\n" not in message
        return message
    if entry == "eval":
        return tool_error(capsys, eval_tool.main, "dltrain-eval", [f"ckpt={ckpt}", "device=cpu", *extra])
    return tool_error(capsys, predict_tool.main, "dltrain-predict",
                      [f"ckpt={ckpt}", f"input={workdir / 'points.csv'}", f"output={workdir / 'out.csv'}",
                       "device=cpu", *extra])


ENTRIES = ["resume", "eval", "predict"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("target", list(EVIL_MODELS))
def test_a_stored_custom_target_is_refused_and_never_runs(custom_ckpt, workdir, capsys, entry, target):
    evil = craft(custom_ckpt, workdir / "evil.pt", set_key("model", EVIL_MODELS[target]))
    message = refusal(entry, evil, workdir, capsys)
    naming = "model=custom model._target_=" if entry == "resume" else "model._target_="
    assert (f"was trained with model=custom model._target_={target}, which would import and run that code: "
            f"if you trust it, name it on the command line ({naming}{target}) or pass trust_code=true") in message
    assert not (workdir / MARKER).exists() and "evilmod" not in sys.modules


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_stored_power_tower_is_refused_at_once(sine_ckpt, workdir, capsys, entry):
    evil = craft(sine_ckpt, workdir / "evil.pt", set_key("data.function", "9**9**9"))
    start = time.perf_counter()
    message = refusal(entry, evil, workdir, capsys)
    assert time.perf_counter() - start < 10
    assert "data.function=9**9**9, which is not an allowed expression (the exponent 9**9 = 387420489 is beyond " \
        "±100" in message


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_trust_code_stored_in_the_checkpoint_allows_nothing(custom_ckpt, workdir, capsys, entry):
    def edit(config: dict[str, Any]) -> None:
        config["model"] = EVIL_MODELS["os.system"]
        config["trust_code"] = True
    evil = craft(custom_ckpt, workdir / "evil.pt", edit)
    assert "pass trust_code=true" in refusal(entry, evil, workdir, capsys)
    assert not (workdir / MARKER).exists()


@pytest.mark.parametrize("entry", ENTRIES)
def test_another_named_target_does_not_allow_the_stored_one(custom_ckpt, workdir, capsys, entry):
    evil = craft(custom_ckpt, workdir / "evil.pt", set_key("model", EVIL_MODELS["os.system"]))
    named = ["model=custom", f"model._target_={NET}"] if entry == "resume" else [f"model._target_={NET}"]
    message = refusal(entry, evil, workdir, capsys, *named)
    assert f"was trained with model._target_=os.system, not the model._target_={NET} given" in message
    assert not (workdir / MARKER).exists()


@pytest.mark.parametrize("key, value, says", [
    ("model._target_", "os.system", "its config sets model._target_=os.system, which names code to run"),
    ("optim._target_", "os.system", "its config sets optim._target_=os.system, which names code to run"),
    ("data._partial_", True, "its config sets data._partial_=True, which names code to run"),
    ("model.name", "os", "was trained with model=os, which is not a model of this dltrain version"),
    ("data.noise", "${oc.env:HOME}", "its config sets data.noise=${oc.env:HOME}, an interpolation"),
    ("data.function", "__import__('os').system('id')", "which is not an allowed expression"),
])
def test_stored_values_that_name_code_are_refused(sine_ckpt, workdir, key, value, says):
    evil = craft(sine_ckpt, workdir / "evil.pt", set_key(key, value))
    with pytest.raises(UserError, match="use a checkpoint written by dltrain training") as err:
        load_model(evil)
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("entry", ["eval", "predict"])
@pytest.mark.parametrize("key, value, says", [
    ("data.samples", 10**12, "data.samples=1000000000000 is out of range: it must be <= 10000000"),
    ("trainer.eval_batch_size", -5, "trainer.eval_batch_size=-5 is out of range"),
    ("data.noise", "loud", "data.noise"),
    ("data.unknown", 1, "unknown"),
])
def test_stored_values_out_of_range_are_refused_before_anything_is_built(sine_ckpt, workdir, capsys, entry, key,
                                                                         value, says):
    # A stored config is typed and validated as a composed one: a billion generated points would
    # otherwise be allocated by dltrain-eval before anything else failed.
    evil = craft(sine_ckpt, workdir / "evil.pt", set_key(key, value))
    start = time.perf_counter()
    message = refusal(entry, evil, workdir, capsys)
    assert time.perf_counter() - start < 10
    assert "its config does not fit this dltrain version" in message and says in message


def test_generated_datasets_are_bounded_on_the_command_line():
    with pytest.raises(ConfigError, match=r"data.samples=100000000 is out of range: it must be <= 10000000"):
        compose(["data=sine", "data.samples=100000000"])


@pytest.mark.slow  # the console script in a subprocess; test_corpus.py runs the input in-process
def test_resume_of_a_crafted_checkpoint_is_one_line_on_the_command_line(custom_ckpt, tmp_path):
    evil = craft(custom_ckpt, tmp_path / "evil.pt", set_key("model", EVIL_MODELS["os.system"]))
    proc = run_cli([f"resume={evil}", "device=cpu", "hydra.run.dir=run"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("dltrain: error: checkpoint") and "\n" not in message
    assert "model._target_=os.system" in message and not (tmp_path / MARKER).exists()


# --- the user's say-so ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("allow", [[f"model._target_={NET}"], ["trust_code=true"]])
def test_the_named_target_or_trust_code_rebuilds_the_custom_model(custom_ckpt, workdir, capsys, allow):
    eval_tool.main([f"ckpt={custom_ckpt}", "device=cpu", *allow])
    assert "accuracy" in capsys.readouterr().out
    predict_tool.main([f"ckpt={custom_ckpt}", f"input={workdir / 'points.csv'}", f"output={workdir / 'out.csv'}",
                       "device=cpu", *allow])
    assert len((workdir / "out.csv").read_text().splitlines()) == 3
    named = ["model=custom", *allow] if allow[0].startswith("model.") else allow
    summary = train(compose(["device=cpu", f"resume={custom_ckpt}", "trainer.max_epochs=2", *named]),
                    run_dir=workdir / "resumed")
    assert summary["epochs_run"] == 2 and summary["status"] == "completed"


def test_a_module_in_the_working_directory_runs_once_the_user_names_it(custom_ckpt, workdir, capsys):
    crafted = craft(custom_ckpt, workdir / "download.pt", set_key("model._target_", "evilmod.Net"))
    eval_tool.main([f"ckpt={crafted}", "device=cpu", "model._target_=evilmod.Net"])
    assert "accuracy" in capsys.readouterr().out
    assert (workdir / MARKER).read_text() == "top-level code ran"  # the user's own decision


# --- data.function: an allow-listed expression tree ---------------------------------------------------------------


@pytest.mark.parametrize("text, f", [
    ("sin(3*x) + 0.5*x", lambda x: np.sin(3 * x) + 0.5 * x),
    ("exp(-x**2 / 2) / sqrt(2*pi)", lambda x: np.exp(-x**2 / 2) / np.sqrt(2 * np.pi)),
    ("-x**2 + 2**-x - x % 1 + x // 2", lambda x: -x**2 + 2.0**-x - x % 1 + x // 2),
    ("where(x > 0, x, 0.1*x)", lambda x: np.where(x > 0, x, 0.1 * x)),
    ("clip(x, -1, 1) * maximum(x, e) + minimum(x, 0)", lambda x: np.clip(x, -1, 1) * np.maximum(x, np.e)
     + np.minimum(x, 0)),
    ("(0 < x) * (x <= 2)", lambda x: ((0 < x) & (x <= 2)).astype(float)),
    ("0 < x <= 2", lambda x: ((0 < x) & (x <= 2)).astype(float)),
    ("tanh", np.tanh),
    ("(9**9)**9", lambda x: np.full_like(x, 9.0**81)),
    ("e**(-x**2)", lambda x: np.exp(-x**2)),
    ("2**(x**2) - x**(3**4) + 2**-(1+2)", lambda x: 2.0**(x**2) - x**81.0 + 0.125),
    ("+".join(["x"] * 60), lambda x: 60 * x),
    ("3", lambda x: np.full_like(x, 3.0)),
    (f"{'(' * 50}x{')' * 50}", lambda x: x),
])
def test_allowed_expressions_equal_numpy(text, f):
    x = np.linspace(-3, 3, 41)
    np.testing.assert_allclose(expression.evaluate(expression.parse(text), x), f(x), rtol=1e-12)


@pytest.mark.parametrize("text, reason", [
    ("9**9**9", "the exponent 9**9 = 387420489 is beyond ±100"),
    ("x**1000", "the exponent 1000 is beyond ±100"),
    ("2**-400", "the exponent -400 is beyond ±100"),
    ("x**(0-1000)", "the exponent 0-1000 = -1000 is beyond ±100"),
    ("sin(x)**(1/0)", "the exponent 1/0 = inf is beyond ±100"),
    ("x**(0/0)", "the exponent 0/0 = nan is not a number"),
    ("1e999 * x", "beyond the float range"),
    ("__import__('os').system('id')", "is not allowed"),
    ("open('f')", "unknown function open"),
    ("x.real", "'x.real' is not allowed"),
    ("(lambda: 1)()", "is not allowed"),
    ("[x for x in ()]", "is not allowed"),
    ("'x' * 3", "'x' is not a number"),
    ("True * x", "True is not a number"),
    ("x if x else 1", "is not allowed"),
    ("sin(x, x)", "sin takes 1 argument(s), not 2"),
    ("sin(x=x)", "is not allowed"),
    ("sin + 1", "sin is a function: call it"),
    ("y", "unknown name y"),
    ("x" + "+x" * 300, "more than the 500 allowed"),
    ("-" * 300 + "x", "301 numbers, names and operations, more than the 200 allowed"),
    ("+".join(["x"] * 101), "201 numbers, names and operations, more than the 200 allowed"),
    ("sin(3*x", "not an expression"),
])
def test_disallowed_expressions_are_refused_at_once(text, reason):
    start = time.perf_counter()
    with pytest.raises(expression.ExpressionError) as err:
        expression.parse(text)
    assert reason in str(err.value) and time.perf_counter() - start < 1


@pytest.mark.parametrize("function", ["9**9**9", "().__class__.__bases__[0].__subclasses__()", "x" + "*x" * 400])
def test_data_function_on_the_command_line_is_one_config_error(function):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^data\.function=.* is not a known function or a valid expression") as err:
        build_sine(seed=0, function=function, samples=50)
    assert "\n" not in str(err.value) and time.perf_counter() - start < 1


@pytest.mark.parametrize("function, bad", [("(9**9)**9", 50), ("exp(x**4)", None), ("log(x)", None)])
def test_values_that_are_not_finite_are_said_to_be_so(function, bad):
    with pytest.raises(ConfigError) as err:
        build_sine(seed=0, function=function, samples=50)
    message = str(err.value)
    assert message.startswith(f"data.function={function!r} is valid, but its values are not finite as float32")
    assert "points of [data.x_min, data.x_max] = [-3.14159, 3.14159]: use a function whose values stay finite " \
        "there, or narrow data.x_min and data.x_max" in message
    assert "Error" not in message and "not a known function" not in message
    if bad is not None:
        assert f" at {bad} of 50 points " in message


@pytest.mark.parametrize("entry", ["resume", "eval"])
def test_a_stored_function_that_overflows_names_the_checkpoint(sine_ckpt, workdir, capsys, entry):
    evil = craft(sine_ckpt, workdir / "evil.pt", set_key("data.function", "exp(x**4)"))
    message = refusal(entry, evil, workdir, capsys)
    where = f"resume={evil}: the checkpoint's" if entry == "resume" else f"checkpoint {evil}: its"
    assert f"{where} data.function='exp(x**4)' is valid, but its values are not finite as float32" in message
    assert "[data.x_min, data.x_max] = [-3.14159, 3.14159]: " in message and "Error" not in message


@pytest.mark.parametrize("key, value, says", [
    ("input_scaling", {"mean": ["abc", 0.0], "std": [1.0, 1.0]}, "input_scaling="),
    ("class_names", 5, "class_names=5 is not a list of names"),
    ("task", "weird", "task=weird is not one of regression, binary, multiclass, multilabel"),
    ("target_scale", ["a", "b"], "target_scale=['a', 'b'] is not [mean, std]"),
    ("num_outputs", -1, "num_outputs=-1 is not a whole number >= 1"),
])
@pytest.mark.parametrize("entry", ["eval", "predict"])
def test_a_damaged_data_record_is_one_line(sine_ckpt, workdir, capsys, entry, key, value, says):
    """The preprocessing a checkpoint records is read from the file too: checked before use."""
    state = torch.load(sine_ckpt, weights_only=True)
    state["data"][key] = value
    torch.save(state, workdir / "evil.pt")
    (workdir / "points.csv").write_text("x\n0.5\n")
    message = refusal(entry, workdir / "evil.pt", workdir, capsys)
    assert f"its data record's {says}" in message and "use a checkpoint written by dltrain training" in message
