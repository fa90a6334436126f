"""ALFWorld's grammar for the fast engine: TextWorld's PDDL grammar document, parsed and compiled once.

A game's ``grammar`` field is a document of ``grammar :: <triple-quoted JSON>;`` parts (production rules)
and ``action Name { template :: "..."; feedback :: "..."; ... }`` parts (command templates and feedback rules).
TextWorld's ``ContextSensitiveGrammar`` re-parses grammar text with TatSu at every ``derive()``; here each
distinct string (production, template, feedback rule, query) is parsed once per process (while it stays in a
bounded ``functools.lru_cache``: training visits thousands of games), with TextWorld's
own parsers so that the result is the same symbol by symbol, and compiled into tuples (:data:`Nodes`) that
:class:`~prm_gym.envs.alfworld.fast.text.TextGenerator` expands. ``{expression}`` symbols are compiled by
:func:`~prm_gym.envs.alfworld.fast.expressions.compile_expression` (a whitelist, never Python's ``eval``), so a
game file cannot run code.
"""

from __future__ import annotations

import functools
import json
import re
import textwrap
from typing import Any, NamedTuple

from prm_gym.envs.alfworld.fast.expressions import compile_expression

__all__ = [
    "Conditional",
    "Eval",
    "Grammar",
    "ListOf",
    "Node",
    "Nodes",
    "Query",
    "Symbol",
    "Text",
    "Var",
    "compile_grammar",
    "parse_grammar_document",
]

#: A placeholder or a variable: (name, type).
Var = tuple[str, str]
#: A compiled conjunctive query: ((predicate, placeholders, placeholder types), ...).
Query = tuple[tuple[str, tuple[Var, ...], tuple[str, ...]], ...]


class Text(NamedTuple):
    """Literal text, output as is."""

    text: str


class Symbol(NamedTuple):
    """A nonterminal ``#name#``, expanded by the first of its production rules whose condition holds."""

    name: str


class Eval(NamedTuple):
    """An ``{expression}``, compiled by :func:`compile_expression`: called with ``{placeholder: Entity}``."""

    evaluate: Any


class Conditional(NamedTuple):
    """``[expression | query]``: the expression once per solution of the query (once as is without one)."""

    expression: Symbol | Eval
    query: Query | None


class ListOf(NamedTuple):
    """``{[expression | query]}``: a conditional's outputs joined as a list, "a, b, and c"."""

    conditional: Conditional


#: A compiled grammar symbol (NamedTuples: as light as the tuples TextWorld's symbols are compiled into).
Node = Text | Symbol | Conditional | ListOf
#: A compiled symbol list.
Nodes = tuple[Node, ...]

_SKIP = re.compile(r"(?:\s+|#[^\n]*)*")
_NAME = re.compile(r"[\w/-]+")
_STR = re.compile(r'"[^"]*"')
_STR_BLOCK = re.compile(r'"""(?:.|\n)*?"""')
_ACTION_FIELDS = (("template", _STR), ("feedback", _STR), ("pddl", _STR_BLOCK), ("grammar", _STR_BLOCK))


class _Cursor:
    """A position in a grammar document, read token by token (comments and blanks skipped)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self) -> None:
        match = _SKIP.match(self.text, self.pos)
        if match:
            self.pos = match.end()

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.text)

    def literal(self, token: str) -> bool:
        self.skip()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def context(self) -> str:
        return self.text[self.pos : self.pos + 40]

    def expect(self, token: str) -> None:
        if not self.literal(token):
            raise ValueError(f"Grammar document: expected {token!r} at offset {self.pos}: {self.context()!r}")

    def pattern(self, regex: re.Pattern[str], what: str) -> str:
        self.skip()
        match = regex.match(self.text, self.pos)
        if not match:
            raise ValueError(f"Grammar document: expected {what} at offset {self.pos}: {self.context()!r}")
        self.pos = match.end()
        return match.group(0)


def parse_grammar_document(text: str) -> tuple[dict[str, tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """Parse an ALFWorld ``grammar`` field as ``textworld.envs.pddl.logic.GameLogic`` does.

    Returns:
        ``{action name (lower case): (command template, feedback rule)}`` and the production rules,
        ``{symbol: [(condition, rhs), ...]}``, merged in document order (a later definition replaces one).

    Raises:
        ValueError: on text that is not such a document, naming the offset.
    """
    cursor = _Cursor(text)
    actions: dict[str, tuple[str, str]] = {}
    merged: dict[str, Any] = {}
    while not cursor.at_end():
        if cursor.literal("grammar"):
            cursor.expect("::")
            block = cursor.pattern(_STR_BLOCK, 'a """block"""')
            cursor.expect(";")
            merged.update(json.loads(textwrap.dedent(block[3:-3])))
        elif cursor.literal("action"):
            name = cursor.pattern(_NAME, "an action name")
            cursor.expect("{")
            fields: dict[str, str] = {}
            while not cursor.literal("}"):
                for field, regex in _ACTION_FIELDS:
                    if cursor.literal(field):
                        cursor.expect("::")
                        fields[field] = cursor.pattern(regex, f"the {field} of action {name!r}")
                        cursor.expect(";")
                        break
                else:
                    raise ValueError(f"Grammar document: unexpected text in action {name!r} at offset {cursor.pos}.")
            if "template" not in fields or "feedback" not in fields:
                raise ValueError(f"Grammar document: action {name!r} lacks a template or a feedback.")
            actions[name.lower()] = (fields["template"][1:-1], fields["feedback"][1:-1])
            grammar = textwrap.dedent(fields["grammar"][3:-3]) if "grammar" in fields else "{}"
            lines = [line for line in grammar.split("\n") if not line.lstrip().startswith("#")]
            merged.update(json.loads("\n".join(lines)))
        else:
            raise ValueError(f"Grammar document: expected 'action' or 'grammar' at offset {cursor.pos}.")
    rules = {name: [(rule.get("condition", ""), rule["rhs"]) for rule in entries] for name, entries in merged.items()}
    return actions, rules


#: Distinct strings kept compiled, per kind (games share most of theirs: a few thousand in all).
_TEXT_CACHE_SIZE = 8192
#: Compiled grammars kept (games share a few grammar documents).
_GRAMMAR_CACHE_SIZE = 16


@functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)
def _compile_symbols(text: str) -> Nodes:
    from textworld.envs.pddl import textgen

    return tuple(_convert_symbol(symbol) for symbol in textgen._parse_and_convert(text, rule_name="symbols"))


def _convert_symbol(symbol: Any) -> Node:
    """Compile a top-level symbol (TextWorld's ``textgen.ebnf``: list, conditional, nonterminal or terminal)."""
    from textworld.envs.pddl import textgen

    if isinstance(symbol, textgen.TerminalSymbol):
        return Text(str(symbol.symbol))
    if isinstance(symbol, textgen.NonterminalSymbol):
        return Symbol(str(symbol.symbol))
    if isinstance(symbol, textgen.ListSymbol):
        return ListOf(_convert_conditional(symbol.symbol))
    return _convert_conditional(symbol)


def _convert_conditional(symbol: Any) -> Conditional:
    from textworld.envs.pddl import textgen

    if not isinstance(symbol, textgen.ConditionalSymbol):
        raise ValueError(f"Expected a conditional grammar symbol, got {symbol!r}.")
    query = _compile_query(symbol.given) if symbol.given else None
    return Conditional(_convert_expression(symbol.expression), query)


def _convert_expression(symbol: Any) -> Symbol | Eval:
    from textworld.envs.pddl import textgen

    if isinstance(symbol, textgen.NonterminalSymbol):
        return Symbol(str(symbol.symbol))
    if isinstance(symbol, textgen.EvalSymbol):
        return Eval(compile_expression(symbol.expression))
    raise ValueError(f"Unknown grammar symbol {symbol!r}.")


@functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)
def _compile_query(text: str) -> Query:
    from textworld.logic import Rule

    rule = Rule.parse_conjunctive_query(text)
    return tuple(
        (
            predicate.name,
            tuple((ph.name, ph.type) for ph in predicate.parameters),
            tuple(ph.type for ph in predicate.parameters),
        )
        for predicate in rule.preconditions
    )


class Grammar:
    """A compiled ALFWorld grammar: command templates, feedback rules and production rules.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> from prm_gym.envs.alfworld.fast.pddl import load_game_json
        >>> grammar = compile_grammar(load_game_json(list_games("tiny", task_types="look")[0])["grammar"])
        >>> grammar.actions["look"]  # the command template and the feedback rule, compiled
        ((Text(text='look'),), (Symbol(name='look.feedback'),))
        >>> grammar.intro
        (Symbol(name='intro'),)
    """

    def __init__(self, document: str) -> None:
        """Parse and compile a ``grammar`` field (see :func:`parse_grammar_document`)."""
        actions, rules = parse_grammar_document(document)
        #: ``{action name: (template, feedback rule)}``, compiled.
        self.actions: dict[str, tuple[Nodes, Nodes]] = {
            name: (_compile_symbols(template), _compile_symbols(feedback))
            for name, (template, feedback) in actions.items()
        }
        #: ``{symbol: ((condition query or None, rhs), ...)}``.
        self.rules: dict[str, tuple[tuple[Query | None, Nodes], ...]] = {
            name: tuple((_compile_query(cond) if cond else None, _compile_symbols(rhs)) for cond, rhs in entries)
            for name, entries in rules.items()
        }
        self.intro: Nodes = _compile_symbols("#intro#")

    def predicates(self, nodes: Nodes) -> set[str]:
        """Return the predicates the expansion of ``nodes`` may query (following nonterminals)."""
        found: set[str] = set()
        seen: set[str] = set()
        stack = [nodes]
        while stack:
            for node in stack.pop():
                expression: Node | Eval = node
                if isinstance(node, ListOf):
                    node = node.conditional
                if isinstance(node, Conditional):
                    if node.query is not None:
                        found.update(pred for pred, _, _ in node.query)
                    expression = node.expression
                if isinstance(expression, Symbol) and expression.name not in seen:
                    seen.add(expression.name)
                    for query, rhs in self.rules.get(expression.name, ()):
                        if query is not None:
                            found.update(pred for pred, _, _ in query)
                        stack.append(rhs)
        return found


@functools.lru_cache(maxsize=_GRAMMAR_CACHE_SIZE)
def compile_grammar(document: str) -> Grammar:
    """Return a ``grammar`` field compiled (cached by its text: games share most of theirs)."""
    return Grammar(document)
