"""Demonstrations as data: the file format and its errors, episodes folders, saving, degrading, SFT and the CLI."""

import dataclasses
import hashlib
import json
import logging

import pytest

from prm_gym.agents import RandomAgent, WalkthroughAgent
from prm_gym.cli import main
from prm_gym.rollout import CollectConfig, collect_rollouts, load_episodes, load_run_config
from prm_gym.rollout.demonstrations import (
    degrade_demonstrations,
    demonstrations_fingerprint,
    load_demonstrations,
    save_demonstrations,
)
from prm_gym.rollout.storage import game_key


def collect(folder, agent, **settings):
    """Episodes of the real tiny games, as `prm-gym collect` writes them: the first ones (the walkthroughs' lengths
    and the random episodes' games, those of the first two walkthroughs, are what the tests count on)."""
    defaults = dict(split="tiny", repeats=1, num_envs=1, vectorization="sync", game_selection="first",
                    output_dir=str(folder))
    config = CollectConfig(**{**defaults, **settings})
    return collect_rollouts(agent, config, progress=False)


@pytest.fixture(scope="module")
def walkthroughs(tmp_path_factory):
    """The gold walkthroughs of 3 tiny games (4, 4 and 6 commands), all won."""
    return collect(tmp_path_factory.mktemp("walkthroughs"), WalkthroughAgent(), num_games=3)


@pytest.fixture(scope="module")
def capped_walkthroughs(tmp_path_factory):
    """The same walkthroughs capped at 5 steps: the 6-command one is lost."""
    return collect(tmp_path_factory.mktemp("capped"), WalkthroughAgent(), num_games=3, max_episode_steps=5)


@pytest.fixture(scope="module")
def random_episodes(tmp_path_factory):
    """Random-policy episodes of the first 2 tiny games (2 each, 4 steps at most)."""
    return collect(tmp_path_factory.mktemp("random"), RandomAgent(), num_games=2, repeats=2, max_episode_steps=4)


def as_line(episode, *, final_observation=None) -> dict:
    """An episode in the demonstrations file format (everything it can hold)."""
    contexts = episode.contexts
    final = [] if final_observation is None else [final_observation]
    return {"task": contexts[0].task, "observations": [c.observation for c in contexts] + final,
            "actions": episode.actions, "reasons": episode.reasons,
            "admissible_commands": [list(c.admissible_commands) for c in contexts],
            "game_file": episode.game_file, "task_type": episode.task_type}  # fmt: skip


def write_lines(path, rows) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def demonstrations_file(walkthroughs, tmp_path):
    """The walkthroughs written as a demonstrations file, the first with a final observation, a blank line between."""
    first, *others = load_episodes(walkthroughs)
    return write_lines(tmp_path / "demos.jsonl", [as_line(first, final_observation="You won!"), "",
                                                  *map(as_line, others)])  # fmt: skip


def test_a_file_gives_the_episodes_played_and_a_folder_keeps_them(walkthroughs, demonstrations_file, tmp_path):
    played = load_episodes(walkthroughs)
    episodes = load_demonstrations(demonstrations_file)
    assert [e.episode_id for e in episodes] == ["0:0", "1:0", "2:0"] and {e.agent for e in episodes} == {"demonstrator"}
    for episode, original in zip(episodes, played, strict=True):
        # Every context as it was in play (history, admissible commands, game), the final observation ignored.
        assert episode.contexts == original.contexts and len(episode.contexts[-1].history) == len(episode.steps) - 1
        assert episode.steps == original.steps and episode.won  # taken as won: reward 1 on the last step
        assert (episode.game_file, episode.task_type) == (original.game_file, original.task_type)

    folder = save_demonstrations(episodes, tmp_path / "saved", {"source": "demos.jsonl"})
    assert load_demonstrations(folder) == load_episodes(folder) == episodes
    assert load_run_config(folder)["run"] == "demonstrations"
    assert load_run_config(folder)["config"] == {"source": "demos.jsonl"}


GOOD = {"task": "t", "observations": ["a", "b"], "actions": ["go", "take"]}


def test_a_minimal_line_is_one_won_episode_without_commands_or_reasons(tmp_path):
    file = write_lines(tmp_path / "d.jsonl", [{"task": "heat an egg.", "observations": ["Hi.", "There."],
                                               "actions": ["go to microwave 1", "heat egg 1"]},
                                              {**GOOD, "reasons": [None, "It is here."]}])  # fmt: skip
    episode, reasoned = load_demonstrations(file)
    assert [s.won for s in episode.steps] == [False, True] and [s.reward for s in episode.steps] == [0.0, 1.0]
    assert episode.steps[1].context.history == (("Hi.", "go to microwave 1"),)
    assert episode.reasons == [None, None] and episode.contexts[0].admissible_commands == ()
    assert episode.game_file is None and episode.task_type == ""
    assert reasoned.reasons == [None, "It is here."] and reasoned.episode_id == "1:0"
    assert load_demonstrations(save_demonstrations([episode, reasoned], tmp_path / "saved", {})) == [episode, reasoned]



@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"Line 1 of .*d\.jsonl is not JSON .*write one JSON object per line"),
        ('["t", ["a"], ["go"]]', r"Line 1 of .*: a list, not a JSON object"),
        ({"observations": ["a"], "actions": ["go"]}, r"Line 1 of .*: the episode lacks \['task'\]; its fields are"),
        ({**GOOD, "observation": "a"}, r"has unknown fields \['observation'\]; its fields are"),
        ({**GOOD, "task": " "}, r"`task` should be the goal sentence, a non-empty string"),
        ({**GOOD, "actions": "go"}, r"`actions` should be a list of commands, non-empty strings"),
        ({**GOOD, "actions": ["go", ""]}, r"`actions` should be a list of commands, non-empty strings"),
        ({**GOOD, "actions": []}, r"`actions` should be a list of commands"),
        ({**GOOD, "observations": ["a", "b", "c", "d"]}, r"4 observations for 2 actions: give `observations`"),
        ({**GOOD, "observations": ["a"]}, r"1 observations for 2 actions"),
        ({**GOOD, "observations": ["a", 2]}, r"observations for 2 actions: give `observations` as strings"),
        ({**GOOD, "reasons": ["why"]}, r"`reasons` should list one reason \(a string, or null\) per action"),
        ({**GOOD, "admissible_commands": [["go"]]}, r"`admissible_commands` should hold one list .* per action \(2"),
        ({**GOOD, "game_file": 3}, r"`game_file` and `task_type` should be strings"),
    ],
)
def test_a_malformed_line_is_one_error_naming_the_file_the_line_and_the_fix(tmp_path, line, match):
    file = write_lines(tmp_path / "d.jsonl", [line])
    with pytest.raises(ValueError, match=match):
        load_demonstrations(file)


def test_the_line_named_is_the_bad_one_and_empty_or_missing_sources_say_what_to_give(tmp_path):
    with pytest.raises(ValueError, match=r"Line 3 of .*: `task` should be"):
        load_demonstrations(write_lines(tmp_path / "d.jsonl", [GOOD, "", {**GOOD, "task": ""}]))
    with pytest.raises(ValueError, match=r"empty\.jsonl holds no demonstration: write one JSON object per line"):
        load_demonstrations(write_lines(tmp_path / "empty.jsonl", ["", " "]))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"task": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"is not UTF-8 text \(byte 14\): save it as UTF-8"):
        load_demonstrations(tmp_path / "latin1.jsonl")
    with pytest.raises(FileNotFoundError, match=r"No episodes at .*missing: give a JSON-lines file .*prm-gym collect "
                                                r"--agent walkthrough"):  # fmt: skip
        load_demonstrations(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"episodes\.jsonl does not exist"):
        load_demonstrations(tmp_path)  # a folder, but no episodes folder


def test_an_episodes_folder_gives_its_won_episodes(capped_walkthroughs, caplog):
    everything = load_episodes(capped_walkthroughs)
    assert [e.won for e in everything] == [True, True, False]
    with caplog.at_level(logging.INFO, logger="prm_gym.rollout.demonstrations"):
        assert load_demonstrations(capped_walkthroughs) == everything[:2]
    assert "2 won episodes kept as demonstrations, 1 lost ones dropped" in caplog.text
    assert load_demonstrations(capped_walkthroughs, won_only=False) == everything


def test_a_folder_without_a_won_episode_is_refused(tmp_path):
    folder = collect(tmp_path / "lost", WalkthroughAgent(), num_games=2, max_episode_steps=3)
    with pytest.raises(ValueError, match=r"None of the 2 episodes in .*lost was won: .*`--all-episodes`"):
        load_demonstrations(folder)
    assert len(load_demonstrations(folder, won_only=False)) == 2


def test_saving_refuses_what_would_not_load_back_and_what_is_not_demonstrations(walkthroughs, tmp_path):
    episodes = load_episodes(walkthroughs)
    with pytest.raises(ValueError, match=r"Episodes \['0:0'\] appear twice: give each demonstration its own"):
        save_demonstrations([episodes[0], episodes[0]], tmp_path / "twice", {})
    with pytest.raises(ValueError, match="No demonstrations to write"):
        save_demonstrations([], tmp_path / "none", {})
    with pytest.raises(ValueError, match=r"holds something other than demonstrations: choose another output_dir"):
        save_demonstrations(episodes, walkthroughs, {})  # a collect folder is not replaced
    assert load_run_config(walkthroughs)["run"] == "collect"
    saved = save_demonstrations(episodes, tmp_path / "demos", {"first": True})
    save_demonstrations(episodes[:1], saved, {"second": True})  # demonstrations are replaced, whole
    assert load_demonstrations(saved) == episodes[:1] and load_run_config(saved)["config"] == {"second": True}


def test_the_fingerprint_names_the_source_and_hashes_the_file_read(walkthroughs, demonstrations_file):
    folder = demonstrations_fingerprint(walkthroughs)
    assert folder["demonstrations"] == load_run_config(walkthroughs)
    assert folder["demonstrations_sha256"] == hashlib.sha256((walkthroughs / "episodes.jsonl").read_bytes()).hexdigest()
    file = demonstrations_fingerprint(demonstrations_file)
    with open(demonstrations_file, "rb") as f:
        assert file == {"demonstrations": {"file": "demos.jsonl"},
                        "demonstrations_sha256": hashlib.sha256(f.read()).hexdigest()}  # fmt: skip


def test_degrading_replaces_and_cuts_a_seeded_share(walkthroughs, random_episodes):
    demos, randoms = load_episodes(walkthroughs), load_episodes(random_episodes)
    demos = demos + [dataclasses.replace(e, episode_id=f"{e.game_index}:1", repeat=1) for e in demos]  # 6 demos
    spoilt = degrade_demonstrations(demos, replace_share=1 / 3, replacements=randoms, truncate_share=0.5, seed=3)
    assert spoilt == degrade_demonstrations(demos, replace_share=1 / 3, replacements=randoms, truncate_share=0.5,
                                            seed=3)  # fmt: skip
    assert [e.episode_id for e in spoilt] == [e.episode_id for e in demos]
    replaced = [i for i, e in enumerate(spoilt) if e.agent == "random"]
    cut = [i for i, e in enumerate(spoilt) if e.agent == "walkthrough" and e.steps != demos[i].steps]
    assert len(replaced) == 2 and len(cut) == 3 and not set(replaced) & set(cut)
    for i in replaced:
        drawn = next(r for r in randoms if r.steps == spoilt[i].steps)
        if demos[i].game_index < 2:  # a random episode of its own game is there
            assert game_key(drawn.game_file) == game_key(demos[i].game_file)
        assert (spoilt[i].game_index, spoilt[i].repeat) == (demos[i].game_index, demos[i].repeat)
    for i in cut:
        assert 1 <= len(spoilt[i].steps) < len(demos[i].steps)
        assert spoilt[i].steps[:-1] == demos[i].steps[: len(spoilt[i].steps) - 1]
        last = spoilt[i].steps[-1]
        assert (last.won, last.reward, last.done, last.truncated) == (False, 0.0, True, True)
        assert last.context == demos[i].steps[len(spoilt[i].steps) - 1].context
    for i in set(range(6)) - set(replaced) - set(cut):
        assert spoilt[i] == demos[i]
    others = degrade_demonstrations(demos, replace_share=1 / 3, replacements=randoms, truncate_share=0.5, seed=4)
    assert others != spoilt


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"replace_share": 1.5}, r"`replace_share` should be in the interval \[0, 1\]. Received 1.5"),
        ({"truncate_share": -0.1}, r"`truncate_share` should be in the interval \[0, 1\]. Received -0.1"),
        ({"replace_share": 0.6, "truncate_share": 0.6, "replacements": "random"}, r"should be at most 1"),
        ({"replace_share": 0.5}, r"no replacement episodes were given"),
    ],
)
def test_degrading_with_bad_settings_is_one_clear_error(walkthroughs, random_episodes, settings, match):
    if "replacements" in settings:
        settings = {**settings, "replacements": load_episodes(random_episodes)}
    with pytest.raises(ValueError, match=match):
        degrade_demonstrations(load_episodes(walkthroughs), **settings)


def test_one_step_demonstrations_cannot_be_cut(tmp_path):
    file = write_lines(tmp_path / "d.jsonl", [{"task": "t", "observations": ["a"], "actions": ["look"]}] * 2)
    with pytest.raises(ValueError, match=r"Only 0 of the other demonstrations have two steps or more: 1 cannot"):
        degrade_demonstrations(load_demonstrations(file), truncate_share=0.5)


def test_cli_writes_checks_and_degrades_demonstrations(demonstrations_file, capped_walkthroughs, random_episodes,
                                                        tmp_path, capsys):  # fmt: skip
    out = tmp_path / "demos"
    assert main(["demonstrations", "--source", demonstrations_file, "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out == f"3 demonstrations (3 won), 14 steps, 3 games in {out}\n"
    assert load_demonstrations(out) == load_demonstrations(demonstrations_file)
    recorded = load_run_config(out)["config"]
    assert recorded == {"source": demonstrations_file, "all_episodes": False,
                        **demonstrations_fingerprint(demonstrations_file)}  # fmt: skip

    folder = ["--source", str(capped_walkthroughs), "--output-dir", str(out)]
    assert main(["demonstrations", *folder]) == 0
    assert capsys.readouterr().out.startswith("2 demonstrations (2 won), 8 steps, 2 games")
    assert main(["demonstrations", *folder, "--all-episodes"]) == 0
    assert capsys.readouterr().out.startswith("3 demonstrations (2 won), 13 steps, 3 games")

    degrade = ["--degrade.replace-share", "0.34", "--degrade.replacements", str(random_episodes),
               "--degrade.truncate-share", "0.34", "--degrade.seed", "1"]  # fmt: skip
    assert main(["demonstrations", "--source", demonstrations_file, "--output-dir", str(out), *degrade]) == 0
    assert capsys.readouterr().out.startswith("3 demonstrations (")
    spoilt = load_demonstrations(out, won_only=False)
    assert sorted(e.agent for e in spoilt) == ["demonstrator", "demonstrator", "random"]
    assert sum(e.steps[-1].truncated for e in spoilt if e.agent == "demonstrator") == 1
    recorded = load_run_config(out)["config"]["degrade"]
    assert recorded["replace_share"] == 0.34 and recorded["seed"] == 1
    assert recorded["replacements_source"] == load_run_config(random_episodes)

    with open(demonstrations_file, "a") as f:
        f.write('{"task": "t"}\n')
    assert main(["demonstrations", "--source", demonstrations_file, "--output-dir", str(tmp_path / "bad")]) == 2
    assert "prm-gym: error: Line 5 of" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_sft_trains_on_a_demonstrations_file_and_records_it(demonstrations_file, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from conftest import tiny_llama

    from prm_gym.policy import SFTConfig, sft, train_sft

    model, tokenizer = tiny_llama("LlamaForCausalLM", seed=0)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    config = SFTConfig(demonstrations=demonstrations_file, model=str(tmp_path / "base"),
                       output_dir=str(tmp_path / "run"), max_steps=1, save_steps=1, device="cpu",
                       max_prompt_tokens=1024)  # fmt: skip
    model_dir = train_sft(config)
    record = json.loads((model_dir / "training.json").read_text())
    assert record["examples"] == 3  # one per walkthrough
    assert {k: record[k] for k in ("demonstrations", "demonstrations_sha256")} == demonstrations_fingerprint(
        demonstrations_file
    )

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run loaded a model")

    with monkeypatch.context() as patch:
        patch.setattr(sft, "load_pretrained", no_loading)
        assert train_sft(config) == model_dir  # finished with these demonstrations
    with open(demonstrations_file) as f:
        lines = f.readlines()
    with open(demonstrations_file, "w") as f:
        f.writelines(lines[:-1])  # other demonstrations
    with pytest.raises(ValueError, match=r"Cannot resume the fine-tuning .*demonstrations_sha256"):
        train_sft(config)
