"""Grammar ``{expression}`` symbols: what ALFWorld's grammars use evaluates as ``eval`` does; nothing else loads."""

import json
import shutil

import pytest

from prm_gym.envs.alfworld import list_games
from prm_gym.envs.alfworld.fast import FastALFWorldEngine
from prm_gym.envs.alfworld.fast.expressions import compile_expression
from prm_gym.envs.alfworld.fast.grammar import parse_grammar_document
from prm_gym.envs.alfworld.fast.text import Entity

#: Every distinct expression in the grammars of ALFWorld's 4,027 games (found by scanning them all).
REAL_EXPRESSIONS = [
    "co", "co.name", "ko", "ko.name", "o", "o.indefinite", "o.indefinite + ' ' + o.name ", "o.name",
    "o2.indefinite + ' ' + o2.name ", "outero", "outero.name", "outerr", "outerr.name", "r", "r.indefinite",
    "r.name", "r.name ", "r.name or r.id",
]

CRAFTED = [
    "__import__('os').system('touch pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "o.__class__",
    "o._secret",
    "_hidden",
    "open('/etc/passwd').read()",
    "o.name * 10 ** 9",
    "o.name[0]",
    "'a' if o else 'b'",
    "[c for c in o.name]",
    "(lambda: 1)()",
    "o.name.format(o)",
    "o.name == 'x'",
    "b'bytes'",
    "not o",
    "",
    "o.",
]


def entity_sets():
    """Variables as the fast engine passes them, with an empty name too (so that ``or`` takes its second operand)."""
    named = {n: Entity(f"{n}_bar__plus_01", "object", f"{n} 1") for n in ("co", "ko", "o", "o2", "outero", "outerr")}
    rooms = [Entity("sinkbasin_bar__plus_01", "receptacle", "sinkbasin 1"), Entity("agent1", "agent", "")]
    return [{**named, "r": room} for room in rooms]


def expressions_in(document):
    """Every ``{expression}`` in a grammar document, as TextWorld's parser reads it."""
    from textworld.envs.pddl import textgen

    actions, rules = parse_grammar_document(document)
    texts = {text for pair in actions.values() for text in pair}
    texts.update(rhs for entries in rules.values() for _, rhs in entries)
    found = set()

    def walk(symbol):
        if isinstance(symbol, textgen.EvalSymbol):
            found.add(symbol.expression)
        elif isinstance(symbol, textgen.ConditionalSymbol):
            walk(symbol.expression)
        elif isinstance(symbol, textgen.ListSymbol):
            walk(symbol.symbol)

    for text in texts:
        for symbol in textgen._parse_and_convert(text, rule_name="symbols"):
            walk(symbol)
    return found


def assert_evaluates_like_eval(expression):
    evaluate = compile_expression(expression)
    for variables in entity_sets():
        expected = eval(expression.lstrip(" \t"), {}, variables)  # noqa: S307 - the reference, on known text
        assert evaluate(variables) is expected or evaluate(variables) == expected


@pytest.mark.parametrize("expression", REAL_EXPRESSIONS)
def test_every_real_expression_shape_evaluates_like_eval(expression):
    assert_evaluates_like_eval(expression)


def test_or_and_and_short_circuit_like_python():
    variables = {"a": "", "b": "x", "c": 0}
    for expression in ["a or b", "b or a", "a or c", "a and b", "b and c", "b and b", "a or c or b", "1 + 2.5"]:
        assert compile_expression(expression)(variables) == eval(expression, {}, variables)  # noqa: S307


def test_the_tiny_games_expressions_all_evaluate_like_eval():
    documents = {json.loads(path.read_text())["grammar"] for path in list_games("tiny")}
    expressions = set().union(*(expressions_in(document) for document in documents))
    assert expressions and expressions <= set(REAL_EXPRESSIONS)
    for expression in expressions:
        assert_evaluates_like_eval(expression)


def test_a_real_splits_expressions_are_all_known_shapes(alfworld_data_dir):
    documents = {json.loads(path.read_text())["grammar"] for path in list_games("valid_unseen")}
    expressions = set().union(*(expressions_in(document) for document in documents))
    assert expressions <= set(REAL_EXPRESSIONS) and "r.name or r.id" in expressions


def test_a_missing_variable_is_a_name_error_as_in_eval():
    with pytest.raises(NameError, match="'o'"):
        compile_expression("o.name")({})


@pytest.mark.parametrize("expression", CRAFTED)
def test_crafted_expressions_are_refused(expression):
    with pytest.raises(ValueError, match="Grammar expression") as error:
        compile_expression(expression)
    assert expression in str(error.value)


def test_a_crafted_game_file_is_refused_at_load_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    game = tmp_path / "game.tw-pddl"
    shutil.copy(list_games("tiny", task_types="look")[0], game)
    data = json.loads(game.read_text())
    assert "{r.name}" in data["grammar"]
    data["grammar"] = data["grammar"].replace("{r.name}", "{__import__('os').system('touch pwned')}")
    game.write_text(json.dumps(data))
    engine = FastALFWorldEngine()
    with pytest.raises(ValueError, match="function call") as error:
        engine.load(game)
    assert str(game) in str(error.value)
    assert not (tmp_path / "pwned").exists()
