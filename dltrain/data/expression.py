"""Expressions in ``x`` (``data.function='sin(3*x) + 0.5*x'``), parsed into an allow-listed
tree and evaluated by walking it, never by ``eval``: the text may come from a checkpoint.

Allowed: numbers, ``x``, ``pi``, ``e``; ``+ - * / // % **``; comparisons (for ``where``);
calls of the functions in :data:`FUNCTIONS` with positional arguments. Every number is a
float64, so no arithmetic grows without bound (Python's integers would: ``9**9**9`` has
hundreds of millions of digits) and an exponent in ``x`` (``e**(-x**2)``) is evaluated like
any other operation; the caller refuses values that are not finite. An exponent without
``x`` is worked out when the text is read and must lie within :data:`MAX_EXPONENT`, so
``9**9**9`` is a clear refusal at once rather than an overflow found later.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_LENGTH = 500
MAX_NODES = 200
MAX_EXPONENT = 100

#: Function name -> (numpy function, the numbers of arguments it takes).
FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    **{name: (getattr(np, name), (1,)) for name in (
        "sin", "cos", "tan", "exp", "log", "log1p", "sqrt", "abs", "tanh", "sinh", "cosh", "arcsin", "arccos",
        "arctan", "floor", "ceil", "sign")},
    "maximum": (np.maximum, (2,)),
    "minimum": (np.minimum, (2,)),
    "where": (np.where, (3,)),
    "clip": (np.clip, (3,)),
}
CONSTANTS = {"pi": np.float64(np.pi), "e": np.float64(np.e)}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class ExpressionError(ValueError):
    """The text is not an allowed expression in ``x``; the message says what is wrong."""


def parse(text: str) -> ast.expr:
    """Parse ``text`` and check every node against the allow-list.

    A bare function name (``tanh``) means that function of ``x``.

    Raises:
        ExpressionError: too long, not an expression, or using anything not allowed.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"a {type(text).__name__}, not text")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{len(text)} characters, more than the {MAX_LENGTH} allowed")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ExpressionError(f"not an expression: {getattr(err, 'msg', None) or type(err).__name__}") from None
    # Expression nodes only (numbers, names, operations, calls): Load contexts and operator
    # tokens are bookkeeping, and ``x+x`` is three of these.
    nodes = sum(isinstance(node, ast.expr) for node in ast.walk(tree))
    if nodes > MAX_NODES:
        raise ExpressionError(f"{nodes} numbers, names and operations, more than the {MAX_NODES} allowed")
    if isinstance(tree, ast.Name) and tree.id in FUNCTIONS:
        tree = ast.Call(func=tree, args=[ast.Name(id="x", ctx=ast.Load())], keywords=[])
    _check(tree, text.strip())
    return tree


def evaluate(tree: ast.expr, x: np.ndarray) -> np.ndarray:
    """The value of a tree from :func:`parse` at every ``x`` (float64; a constant is broadcast)."""
    with np.errstate(all="ignore"):  # non-finite values are the caller's to report
        value = _value(tree, np.asarray(x, dtype=np.float64))
    return np.broadcast_to(np.asarray(value, dtype=np.float64), np.shape(x))


def _check(node: ast.AST, source: str) -> None:
    """Raise :class:`ExpressionError` for the first node outside the allow-list (``source``:
    the text parsed, to quote a part as the user wrote it)."""
    match node:
        case ast.Constant(value=value):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ExpressionError(f"{value!r} is not a number")
            try:
                finite = bool(np.isfinite(float(value)))
            except OverflowError:
                finite = False
            if not finite:
                raise ExpressionError("a number beyond the float range")
        case ast.Name(id=name):
            if name in FUNCTIONS:
                raise ExpressionError(f"{name} is a function: call it, e.g. {name}(x)")
            if name != "x" and name not in CONSTANTS:
                raise ExpressionError(f"unknown name {name}: use x, pi, e and the functions "
                                      f"{', '.join(FUNCTIONS)}")
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            _check(left, source)
            _check(right, source)
            if isinstance(op, ast.Pow):
                _check_exponent(right, source)
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            _check(operand, source)
        case ast.Compare(left=left, ops=ops, comparators=comparators) if all(type(o) in _COMPARE for o in ops):
            for part in (left, *comparators):
                _check(part, source)
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in FUNCTIONS:
            arities = FUNCTIONS[name][1]
            if len(args) not in arities or any(isinstance(a, ast.Starred) for a in args):
                raise ExpressionError(f"{name} takes {' or '.join(map(str, arities))} argument(s), "
                                      f"not {len(args)}")
            for arg in args:
                _check(arg, source)
        case ast.Call(func=ast.Name(id=name)) if name not in FUNCTIONS:
            raise ExpressionError(f"unknown function {name}: use {', '.join(FUNCTIONS)}")
        case _:
            raise ExpressionError(f"{ast.unparse(node)[:40]!r} is not allowed: only numbers, x, pi, e, "
                                  "+ - * / // % **, comparisons and calls of the listed functions are")


def _check_exponent(node: ast.expr, source: str) -> None:
    """An exponent without ``x`` (already checked) is worked out now and must lie within
    ±:data:`MAX_EXPONENT`; one in ``x`` is left to the values' own check."""
    if any(isinstance(n, ast.Name) and n.id == "x" for n in ast.walk(node)):
        return
    with np.errstate(all="ignore"):
        value = float(_value(node, np.float64(0.0)))
    if abs(value) <= MAX_EXPONENT:  # False for NaN too
        return
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    shown = f"{value:.0f}" if np.isfinite(value) and value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    worked = "" if text.replace(" ", "") == shown else f" = {shown}"
    problem = "is not a number" if np.isnan(value) else f"is beyond ±{MAX_EXPONENT}"
    raise ExpressionError(f"the exponent {text[:40]}{worked} {problem}: compute such powers outside dltrain")


def _value(node: ast.expr, x: np.ndarray) -> Any:
    """Walk a checked tree; every number is a float64."""
    match node:
        case ast.Constant(value=value):
            return np.float64(value)
        case ast.Name(id="x"):
            return x
        case ast.Name(id=name):
            return CONSTANTS[name]
        case ast.BinOp(left=left, op=op, right=right):
            return _BINARY[type(op)](_value(left, x), _value(right, x))
        case ast.UnaryOp(op=op, operand=operand):
            return _UNARY[type(op)](_value(operand, x))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            values = [_value(part, x) for part in (left, *comparators)]
            result = np.bool_(True)
            for op, a, b in zip(ops, values, values[1:], strict=False):
                result = np.logical_and(result, _COMPARE[type(op)](a, b))
            return result
        case ast.Call(func=ast.Name(id=name), args=args):
            return FUNCTIONS[name][0](*(_value(arg, x) for arg in args))
    raise ExpressionError(f"{ast.unparse(node)[:40]!r} is not allowed")  # unreachable after _check
