"""How the package is layered: evaluation and prediction build through ``dltrain.build``
without the training orchestrator, no module imports one that imports it back (function-level
imports included), and each entry point validates each config once."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dltrain
from dltrain import compose, train
from dltrain.cli import app as cli
from dltrain.cli import lr_find as lr_find_cli
from dltrain.config import validation
from dltrain.errors import ConfigError

from .conftest import logging_restored
from .test_run_end import QUICK, run_dltrain

PACKAGE = Path(dltrain.__file__).parent
TRAINING_STACK = ("dltrain.training.run", "dltrain.training.trainer")


# --- eval and predict do not import the training orchestrator -----------------------------------------------------

def test_eval_and_predict_load_neither_the_run_nor_the_trainer(tmp_path: Path) -> None:
    """A fresh process imports both tools, rebuilds a model from a checkpoint and evaluates it:
    the function-level imports of that path are taken too, and none reaches the training stack."""
    summary = train(compose([*QUICK, "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert ckpt.is_file() and summary["status"] == "completed"
    code = ("import json, sys\n"
            "import dltrain.inference.predict, dltrain.inference.evaluate\n"
            "from dltrain.inference.evaluate import evaluate_checkpoint\n"
            "from dltrain.inference.restore import load_model\n"
            "load_model(sys.argv[1], 'cpu')\n"
            "result = evaluate_checkpoint(sys.argv[1], device='cpu')\n"
            "print(json.dumps({'loaded': sorted(m for m in sys.modules if m.startswith('dltrain')),"
            " 'metrics': sorted(result)}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ckpt)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert "dltrain.build" in report["loaded"] and report["metrics"]  # it built and evaluated
    assert not set(TRAINING_STACK) & set(report["loaded"])


# --- no import cycles -----------------------------------------------------------------------------------------------

def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(module: str, path: Path) -> Iterator[str]:
    """What ``module`` imports anywhere in its source, inside functions too, as dotted names:
    ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (``c`` may be a module or a name)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports. A package's ``__init__`` is no target: it
    only re-exports its modules, so an edge into it would close a loop with every module it
    lists (the modules themselves are the edges that matter)."""
    modules = package_modules()
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    return {name: {target for target in imported_names(name, path)
                   if target in modules and target != name and target not in packages}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_walk_finds_a_cycle_of_function_level_imports(tmp_path: Path) -> None:
    """The check below can fail: a lazy import back is a cycle, a package's ``__init__`` is not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.low import x\n")
    (pkg / "sub" / "low.py").write_text("from pkg import sub\nx = 1\n")
    (pkg / "a.py").write_text("from pkg.sub.low import x\n\ndef f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    modules = package_modules(pkg)
    assert set(modules) == {"pkg", "pkg.sub", "pkg.sub.low", "pkg.a", "pkg.b"}
    packages = {"pkg", "pkg.sub"}
    graph = {name: {t for t in imported_names(name, p) if t in modules and t != name and t not in packages}
             for name, p in modules.items()}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    graph["pkg.b"].clear()
    assert find_cycle(graph) is None


def test_no_module_of_dltrain_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    assert {"dltrain.build", "dltrain.cli.app", "dltrain.training.run"} <= set(graph)
    assert "dltrain.training.resume" in graph["dltrain.training.run"]  # the walk sees the imports
    assert find_cycle(graph) is None


def test_the_core_never_imports_the_command_line() -> None:
    """``dltrain`` (the command) calls training, never the other way round; only the other
    entry points (``dltrain-eval``, ``dltrain-predict``) share its error boundary."""
    graph = import_graph()
    entry_points = ("dltrain.cli", "dltrain.inference", "dltrain.__main__")
    below = [m for m in graph if m != "dltrain" and not m.startswith(entry_points)]
    assert {"dltrain.training.run", "dltrain.report.run_end", "dltrain.build"} <= set(below)
    assert [(m, sorted(t for t in graph[m] if t.startswith("dltrain.cli"))) for m in below
            if any(t.startswith("dltrain.cli") for t in graph[m])] == []


# --- nothing below the build step receives a config ------------------------------------------------------------------

#: Everything else is what the build step calls, and takes plain arguments. Above it: the build
#: step itself, the orchestrators (a run; the learning-rate range test) and resume, config/, the
#: entry points, and the sweep progress the command line feeds with each job's Hydra config.
ABOVE_THE_BUILD = ("dltrain.build", "dltrain.training.run", "dltrain.training.lr_find", "dltrain.training.resume",
                   "dltrain.cli", "dltrain.config", "dltrain.inference", "dltrain.report.sweep_progress")


def config_parameters(path: Path) -> list[str]:
    """The functions of ``path`` with a parameter annotated ``DictConfig`` or named like a config."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            if any(a.arg in ("cfg", "tcfg", "config") or (a.annotation is not None and "DictConfig" in
                                                           ast.unparse(a.annotation)) for a in args):
                found.append(f"{path.name}:{node.lineno} {node.name}")
    return found


def test_the_walk_finds_a_function_that_takes_a_config(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def a(x: int) -> None: ...\ndef b(node: 'DictConfig') -> None: ...\n"
                      "def c(*, tcfg) -> None: ...\n")
    assert config_parameters(module) == ["m.py:2 b", "m.py:3 c"]


def test_nothing_below_the_build_step_receives_a_config() -> None:
    below = {name: path for name, path in package_modules().items() if not name.startswith(ABOVE_THE_BUILD)}
    assert {"dltrain.training.trainer", "dltrain.training.distributed", "dltrain.training.checks",
            "dltrain.data.batches", "dltrain.optim"} <= set(below)
    assert [found for path in below.values() for found in config_parameters(path)] == []


# --- each entry point validates each config once --------------------------------------------------------------------

@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The configs ``validate`` is called on from now (top-level calls, each as its ``seed``
    and ``resume``), whichever module calls it; nothing counts as validated before."""
    real = validation.validate
    calls: list[str] = []

    def counting(cfg, prefix: str = ""):
        if not prefix:  # validate() walks nested nodes by calling itself with a prefix
            calls.append(f"seed={cfg.seed} resume={cfg.resume}")
        return real(cfg, prefix)

    for module in [m for name, m in sys.modules.items() if name.startswith("dltrain")]:
        if getattr(module, "validate", None) is real:
            monkeypatch.setattr(module, "validate", counting)
    monkeypatch.setattr(validation, "_passed", {})
    return calls


def test_python_compose_then_train_validates_once(tmp_path: Path, validations: list[str]) -> None:
    train(compose([*QUICK, "trainer.fast_dev_run=true", "seed=3"]), run_dir=tmp_path / "run")
    assert validations == ["seed=3 resume=None"]


def test_a_config_changed_after_compose_is_validated_again(tmp_path: Path, validations: list[str]) -> None:
    cfg = compose([*QUICK, "trainer.fast_dev_run=true"])
    cfg.trainer.max_epochs = -1
    with pytest.raises(ConfigError, match="trainer.max_epochs=-1"):
        train(cfg, run_dir=tmp_path / "run")
    assert len(validations) == 2 and not (tmp_path / "run").exists()


def test_a_resume_validates_the_new_config_and_the_merged_one_once_each(tmp_path: Path,
                                                                         validations: list[str]) -> None:
    train(compose([*QUICK, "trainer.max_epochs=1", "seed=4"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    validations.clear()
    train(compose([*QUICK, "trainer.max_epochs=2", "seed=4", f"resume={last}"]), run_dir=tmp_path / "second")
    assert validations == [f"seed=4 resume={last}", f"seed=4 resume={last}"]  # the new config, then the merged


def test_a_command_line_run_validates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           validations: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = run_dltrain([*QUICK, "trainer.fast_dev_run=true", "seed=5", "hydra.run.dir=run"], monkeypatch)
    assert code == 0 and (tmp_path / "run" / "summary.json").is_file()
    assert validations == ["seed=5 resume=None"]


def test_each_job_of_a_command_line_sweep_validates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         validations: list[str]) -> None:
    from dltrain.report import sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "_plot", lambda summary: None)  # beside the point, and slow
    code = run_dltrain(["-m", *QUICK, "trainer.fast_dev_run=true", "seed=6,7", "hydra.sweep.dir=sweep"], monkeypatch)
    assert code == 0 and (tmp_path / "sweep" / "1" / "summary.json").is_file()
    assert validations == ["seed=6 resume=None", "seed=7 resume=None"]


def test_a_command_line_range_test_validates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  validations: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dltrain-lr-find"])  # main() hands Hydra its arguments there
    monkeypatch.setattr(cli, "_run_dir", None)
    with logging_restored():
        lr_find_cli.main([*QUICK, "optim=sgd", "seed=8", "lr_find.num_steps=10", "hydra.run.dir=found"])
    assert (tmp_path / "found" / "lr_find.json").is_file()
    assert validations == ["seed=8 resume=None"]


def test_every_package_of_dltrain_is_installed() -> None:
    """A regular ``pip install .`` ships the packages pyproject.toml lists, not those on disk:
    a new subpackage left out of the list would be missing from every regular install."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(dltrain.__file__).parent
    on_disk = {"dltrain." + ".".join(init.parent.relative_to(root).parts) if init.parent != root else "dltrain"
               for init in root.rglob("__init__.py")}
    listed = set(tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert on_disk - listed == set()


@pytest.mark.parametrize("package", ["dltrain.data", "dltrain.models"])
def test_every_module_of_a_registry_package_is_imported_with_it(package: str) -> None:
    """A new dataset or model module registers its options by existing: the package imports
    every module it holds, so no list of modules can forget one."""
    import importlib
    import pkgutil

    imported = importlib.import_module(package)
    names = [m.name for m in pkgutil.iter_modules(imported.__path__)]
    missing = [name for name in names if f"{package}.{name}" not in sys.modules]
    assert names and missing == []
