"""OpenAICompatibleAgent against a real OpenAI-protocol server on loopback (tests/openai_server.py)."""

import json
import logging
import socket
import sys
import time
import traceback
from collections import Counter

import gymnasium as gym
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import BestOfNAgent, OpenAIAgentConfig, OpenAICompatibleAgent, openai_agent
from prm_gym.agents.openai_agent import ServerError, ServerUnreachableError
from prm_gym.agents.walkthrough_agent import walkthrough_of
from prm_gym.envs.alfworld.data import list_games
from prm_gym.prm import Context, render_messages

pytest.importorskip("openai")
from openai_server import OpenAITestServer, admissible_commands, turn  # noqa: E402

KEY_ENV, KEY = "PRM_GYM_TEST_OPENAI_KEY", "sk-test-Zq8v1Secret0123456789"
FAST = {"backoff_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}


def make_agent(server, **overrides):
    return OpenAICompatibleAgent(
        OpenAIAgentConfig(base_url=server.url, **{"api_key_env": KEY_ENV, **FAST, **overrides})
    )


class Clock:
    """Stands in for the agent's ``time`` module: records the backoff sleeps instead of sleeping."""

    def __init__(self):
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(openai_agent, "time", fake)
    return fake


def contexts(k):
    return [
        Context(task="find the mug.", observation=f"Room {i}.", admissible_commands=(f"go to desk {i}", "look"))
        for i in range(k)
    ]


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def misspell(command, turn_index):
    """Return the command as written on this turn: exact, normalised-equal, or one letter short (nearest)."""
    return [command, f"The {command.title()}.", command[0] + command[2:]][turn_index % 3]


def test_plays_a_tiny_game_to_a_win_and_counts_match_paths():
    game = str(next(g for g in list_games("tiny") if "pick_two_obj" in str(g)))
    plan = walkthrough_of(game)

    def walkthrough_policy(messages):
        k = turn(messages)
        assert plan[k] in admissible_commands(messages)
        return f"REASON: Step {k + 1} of the plan.\nACTION: {misspell(plan[k], k)}"

    env = gym.make("prm_gym/ALFWorld-v0", split="tiny")
    with OpenAITestServer(walkthrough_policy) as server, make_agent(server, model=None, temperature=0.0) as agent:
        obs, info = env.reset(options={"game": game})
        agent.reset()
        for _ in range(len(plan)):
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            if terminated or truncated:
                break
    env.close()
    assert info["won"] and reward == 1.0
    assert agent.match_counts == Counter(exact=3, normalised=3, nearest=2)
    assert agent.context.reason == f"Step {len(plan)} of the plan."
    # One request per turn, the model found through GET /v1/models, the prompt from the one renderer.
    assert len(server.completions) == len(plan) and agent.usage["requests"] == len(plan) + 1  # + GET /v1/models
    assert {r["body"]["model"] for r in server.completions} == {"test-model"}
    last = server.completions[-1]["body"]
    assert last["messages"] == render_messages(agent.context.propose(None), agent.config.prompt)


@pytest.mark.parametrize("limit", [2, 6])
def test_decide_is_batched_in_order_and_respects_the_concurrency_limit(limit):
    # The server holds the requests until `limit` are in flight at once (so `limit` are sent concurrently, however
    # slowly the threads run), then answers each after a pause (so that more than `limit` would overlap).
    with OpenAITestServer(gather=limit, delay_s=0.05) as server:
        with make_agent(server, model="m", max_concurrency=limit, timeout_s=120) as agent:
            decisions = agent.decide(contexts(6))
    assert [d.action for d in decisions] == [f"go to desk {i}" for i in range(6)]
    assert server.max_in_flight == limit and len(server.completions) == 6


def test_match_paths_are_counted_per_answer():
    answers = iter(["ACTION: look", "REASON: r\nACTION: `Look.`", "ACTION: lok around"])
    context = Context(task="t", observation="o", admissible_commands=("go to desk 1", "look"))
    with (
        OpenAITestServer(lambda messages: next(answers)) as server,
        make_agent(server, model="m", max_concurrency=1) as agent,
    ):
        decisions = agent.decide([context] * 3)
    assert [d.action for d in decisions] == ["look"] * 3
    assert [d.reason for d in decisions] == [None, "r", None]
    assert agent.match_counts == Counter(exact=1, normalised=1, nearest=1)


def test_sampling_parameters_and_seed_reach_the_server_and_logprobs_come_back():
    with (
        OpenAITestServer() as server,
        make_agent(server, model="m", temperature=0.3, top_p=0.9, max_tokens=17, seed=5, logprobs=True) as agent,
    ):
        (decision,) = agent.decide(contexts(1))
    body = server.completions[0]["body"]
    sent = {name: body[name] for name in ("temperature", "top_p", "max_tokens", "seed", "logprobs", "top_logprobs")}
    assert sent == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 17, "seed": 5, "logprobs": True, "top_logprobs": 0}
    assert "n" not in body
    assert decision.logprob == pytest.approx(-0.25 * len("REASON: It is listed first.\nACTION: go to desk 0".split()))


def test_sample_asks_for_n_in_one_request_when_the_server_supports_it():
    with OpenAITestServer() as server, make_agent(server, model="m") as agent:
        samples = agent.sample(contexts(3), 4)
    assert [[d.action for d in group] for group in samples] == [[f"go to desk {i}"] * 4 for i in range(3)]
    assert [r["body"]["n"] for r in server.completions] == [4, 4, 4]


def test_sample_falls_back_to_one_request_per_answer_when_the_server_ignores_n():
    with OpenAITestServer(max_n=1) as server, make_agent(server, model="m", seed=10) as agent:
        samples = agent.sample(contexts(2), 3)
        assert [len(group) for group in samples] == [3, 3]
        assert len(server.completions) == 2 + 2 * 2  # two n=3 requests, then the missing answers one by one
        agent.sample(contexts(2), 3)  # now known: no `n` asked any more
    assert len(server.completions) == 6 + 6 and all("n" not in r["body"] for r in server.completions[6:])
    assert sorted(r["body"]["seed"] for r in server.completions[6:]) == [10, 10, 11, 11, 12, 12]


def test_best_of_n_over_the_server():
    class PrefersLook:
        def score(self, batch):
            return [float(c.action == "look") for c in batch]

    answers = iter(["ACTION: go to desk 0", "ACTION: look"] * 2)
    with OpenAITestServer(lambda messages: next(answers)) as server, make_agent(server, model="m") as agent:
        assert BestOfNAgent(agent, PrefersLook(), n=2).decide(contexts(1))[0].action == "look"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_are_retried_with_backoff(status, caplog):
    with OpenAITestServer(fail_first=2, fail_status=status, retry_after="0") as server:
        with make_agent(server, model="m", max_retries=3) as agent, caplog.at_level(logging.WARNING):
            (decision,) = agent.decide(contexts(1))
    assert decision.action == "go to desk 0" and len(server.completions) == 3
    assert agent.usage["retries"] == 2 and f"HTTP {status}" in caplog.text and "retry 2/3" in caplog.text


def test_backoff_grows_and_gives_up_with_a_clear_error(clock):
    with OpenAITestServer(fail_first=99) as server:
        with (
            make_agent(
                server, model="m", max_retries=3, backoff_s=0.05, backoff_factor=2.0, backoff_max_s=0.15
            ) as agent,
            pytest.raises(ServerError, match=r"could not answer after 4 attempts: HTTP 500") as error,
        ):
            agent.decide(contexts(1))
    assert len(server.completions) == 4 and error.value.status_code == 500
    assert not isinstance(error.value, ServerUnreachableError)
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.15])  # doubled each retry, then capped


@pytest.mark.parametrize(("retry_after", "waited"), [("0.3", 0.3), ("30", 1.0)])
def test_a_retry_after_header_is_honoured_up_to_the_cap(clock, retry_after, waited):
    with OpenAITestServer(fail_first=1, fail_status=429, retry_after=retry_after) as server:
        with make_agent(server, model="m", backoff_s=0.01, backoff_max_s=1.0) as agent:
            assert agent.decide(contexts(1))[0].action == "go to desk 0"
    assert len(server.completions) == 2 and clock.sleeps == pytest.approx([waited])


@pytest.mark.parametrize("status, hint", [(400, "Scripted failure"), (404, "Check `base_url`")])
def test_client_errors_are_not_retried(status, hint):
    with OpenAITestServer(fail_first=1, fail_status=status) as server, make_agent(server, model="m") as agent:
        with pytest.raises(ServerError, match=hint) as error:
            agent.decide(contexts(1))
    assert len(server.completions) == 1 and error.value.status_code == status


def test_an_unreachable_server_fails_fast_with_a_clear_error(clock):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    config = OpenAIAgentConfig(base_url=url, model="m", max_retries=2, **{**FAST, "timeout_s": 60})
    agent = OpenAICompatibleAgent(config)
    start = time.perf_counter()
    with pytest.raises(ServerUnreachableError) as error:
        agent.decide(contexts(2))
    # A refused connection is known at once: never waited out as a timeout (3 x 60 s), only the backoff's sleeps.
    assert time.perf_counter() - start < 60
    assert set(clock.sleeps) == {0.01, 0.02}  # each request's two retries (the second may not be done yet)
    message = str(error.value)
    assert message.startswith(f"Cannot reach the OpenAI-compatible server at {url} after 3 attempts: ")
    assert "refused" in message.lower() and message.endswith("Is it running?")
    agent.close()


def test_timeouts_are_retried_then_reported(clock):
    # The first request stalls until the server stops: the client gives up on it after `timeout_s` and retries.
    # (The retry itself must be answered within `timeout_s`: 2 s, ample for a loopback request.)
    with OpenAITestServer(stall_first=1, stall_s=600) as server:
        with make_agent(server, model="m", timeout_s=2.0, max_retries=1) as agent:
            assert agent.decide(contexts(1))[0].action == "go to desk 0"
        assert len(server.completions) == 2
    with OpenAITestServer(stall_first=99, stall_s=600) as server:
        with make_agent(server, model="m", timeout_s=0.2, max_retries=1) as agent:
            with pytest.raises(ServerUnreachableError, match=r"after 2 attempts: no answer within 0.2 s"):
                agent.decide(contexts(1))
        assert len(server.completions) == 2


def test_the_key_comes_from_the_named_variable_and_never_leaks(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)
    with OpenAITestServer(api_key=KEY) as server, make_agent(server, model=None) as agent:
        agent.decide(contexts(1))
        assert server.completions[0]["headers"]["authorization"] == f"Bearer {KEY}"
        server.fail_first = 99  # every later request fails: the retry warnings and the error must not hold it
        with pytest.raises(ServerError) as error:
            agent.decide(contexts(1))
    saved = json.dumps(agent.config.to_dict())
    assert KEY_ENV in saved
    for text in (
        repr(agent),
        repr(agent.config),
        saved,
        caplog.text,
        str(error.value),
        "".join(traceback.format_exception(error.value)),
    ):
        assert KEY not in text
    # A server that echoes the key it was sent: the error repeats the echo, redacted.
    monkeypatch.setenv(KEY_ENV, KEY)
    with OpenAITestServer(api_key="another") as server, make_agent(server, model="m") as agent:
        with pytest.raises(ServerError, match=rf"HTTP 401: .*Bearer \*\*\*.*\${KEY_ENV}") as error:
            agent.decide(contexts(1))
    assert KEY not in "".join(traceback.format_exception(error.value)) and error.value.__context__ is None
    assert len(server.completions) == 1  # 401 is not retried


def test_without_the_variable_a_placeholder_key_is_sent(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with OpenAITestServer() as server, make_agent(server, model="m") as agent:
        assert agent.decide(contexts(1))[0].action == "go to desk 0"
    assert server.completions[0]["headers"]["authorization"] == "Bearer EMPTY"
    with OpenAITestServer(api_key=KEY) as server, make_agent(server, model="m") as agent:
        with pytest.raises(ServerError, match=f"\\${KEY_ENV} is not set"):
            agent.decide(contexts(1))


def test_long_histories_are_trimmed_to_the_prompt_budget():
    from prm_gym.prm import PromptConfig

    context = Context(
        task="t",
        history=tuple((f"observation {i} " * 20, "look") for i in range(40)),
        observation="now",
        admissible_commands=("look",),
    )
    prompt = PromptConfig(max_prompt_tokens=300)
    with OpenAITestServer() as server, make_agent(server, model="m", prompt=prompt) as agent:
        agent.decide([context])
    messages = server.completions[0]["body"]["messages"]
    assert sum(len(m["content"]) for m in messages) <= 300 * agent.config.chars_per_token
    assert "earlier turns omitted" in messages[1]["content"] and messages[-1]["content"].startswith("now")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("temperature", -1.0, "`temperature`"),
        ("top_p", 0.0, "`top_p`"),
        ("max_tokens", 0, "`max_tokens`"),
        ("timeout_s", 0, "`timeout_s`"),
        ("max_retries", -1, "`max_retries`"),
        ("max_concurrency", 0, "`max_concurrency`"),
        ("backoff_factor", 0.5, "`backoff_factor`"),
        ("base_url", "127.0.0.1:8000", "`base_url`"),
    ],
)
def test_bad_config_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        OpenAIAgentConfig(**{field: value})


def test_a_key_given_as_api_key_env_is_refused_without_being_echoed():
    with pytest.raises(ValueError, match="NAME of an environment variable") as error:
        OpenAIAgentConfig(api_key_env=KEY)
    assert KEY not in str(error.value)


def test_bad_calls_are_refused():
    agent = OpenAICompatibleAgent(OpenAIAgentConfig(model="m"))
    with pytest.raises(ValueError, match="`n`"):
        agent.sample(contexts(1), 0)
    with pytest.raises(ValueError, match="admissible_commands"):
        agent.decide([Context(task="t", observation="o")])
    agent.close()


def test_a_missing_openai_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"pip install 'prm-gym\[openai\]'"):
        OpenAICompatibleAgent()
