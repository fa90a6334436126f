"""The ``{expression}`` symbols of game grammars, evaluated without Python's ``eval``.

TextWorld evaluates a grammar's ``{o.name}`` symbols with ``eval`` and full builtins, so a crafted ``.tw-pddl``
file runs any code it likes (``{__import__('os').system(...)}``). ALFWorld's 4,027 games only use a few shapes:
names of the symbol's variables, attribute access, string constants, ``+`` and ``or`` (``o.name``,
``o.indefinite + ' ' + o.name``, ``r.name or r.id``). :func:`compile_expression` accepts those shapes (and ``and``
and number constants) and nothing else: no calls, no subscripts, no names or attributes starting with ``_``, no
builtins; anything else is a ``ValueError`` when the game is loaded. What it accepts evaluates as ``eval`` would.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ALLOWED", "Evaluator", "compile_expression"]

#: A compiled expression: call it with the symbol's variables (``{placeholder name: entity}``).
Evaluator = Callable[[Mapping[str, Any]], Any]

#: What a grammar expression may contain (said in every rejection).
ALLOWED = "variable names, attributes (not starting with '_'), string and number constants, '+', 'and', 'or'"


def compile_expression(source: str) -> Evaluator:
    """Compile a grammar expression (the text between braces) into an :data:`Evaluator`.

    Leading spaces and tabs are dropped, as ``eval`` of a string drops them.

    Raises:
        ValueError: when ``source`` is not an expression or uses anything outside :data:`ALLOWED`.

    Example:
        >>> from types import SimpleNamespace
        >>> article = compile_expression("o.indefinite + ' ' + o.name")
        >>> article({"o": SimpleNamespace(indefinite="a", name="apple 1")})
        'a apple 1'
        >>> compile_expression("__import__('os').system('ls')")
        Traceback (most recent call last):
        ...
        ValueError: Grammar expression {__import__('os').system('ls')} uses a function call; game grammars may only use variable names, attributes (not starting with '_'), string and number constants, '+', 'and', 'or'.
    """  # noqa: E501
    try:
        tree = ast.parse(source.lstrip(" \t"), mode="eval")
    except (SyntaxError, ValueError, RecursionError) as error:
        raise ValueError(f"Grammar expression {{{source}}} is not a Python expression: {error}") from None
    return _compile(tree.body, source)


_NODE_NAMES = {ast.Call: "a function call", ast.Subscript: "a subscript", ast.Lambda: "a lambda"}


def _compile(node: ast.expr, source: str) -> Evaluator:
    if isinstance(node, ast.Name) and not node.id.startswith("_"):
        return _name(node.id)
    if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
        return _attribute(_compile(node.value, source), node.attr)
    if isinstance(node, ast.Constant) and type(node.value) in (str, int, float):
        value = node.value
        return lambda variables: value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _compile(node.left, source), _compile(node.right, source)
        return lambda variables: left(variables) + right(variables)
    if isinstance(node, ast.BoolOp):
        return _bool_op(isinstance(node.op, ast.Or), [_compile(value, source) for value in node.values])
    if isinstance(node, (ast.Name, ast.Attribute)):
        what = f"the name {getattr(node, 'id', None) or getattr(node, 'attr', '')!r}"
    else:
        what = _NODE_NAMES.get(type(node), f"a {type(node).__name__} node")
    raise ValueError(f"Grammar expression {{{source}}} uses {what}; game grammars may only use {ALLOWED}.")


def _name(name: str) -> Evaluator:
    def evaluate(variables: Mapping[str, Any]) -> Any:
        try:
            return variables[name]
        except KeyError:
            raise NameError(f"name {name!r} is not defined") from None

    return evaluate


def _attribute(value: Evaluator, attr: str) -> Evaluator:
    return lambda variables: getattr(value(variables), attr)


def _bool_op(is_or: bool, operands: list[Evaluator]) -> Evaluator:
    """Return ``or`` (the first true operand, else the last) or ``and`` (the first false one, else the last)."""

    def evaluate(variables: Mapping[str, Any]) -> Any:
        result: Any = None
        for operand in operands:
            result = operand(variables)
            if bool(result) is is_or:
                return result
        return result

    return evaluate
