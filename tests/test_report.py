"""`prm-gym report`: real evaluation folders on the bundled tiny games merged into one Table 1."""

import json
import os
import shutil
import statistics

import pytest

from prm_gym import report as report_module
from prm_gym.agents import RandomAgent, WalkthroughAgent
from prm_gym.agents.registry import AgentConfig, make_agent
from prm_gym.cli import main
from prm_gym.evaluation import EvalConfig, evaluate, summarize
from prm_gym.report import PAPER_TABLE_1, ReportConfig, build_report
from prm_gym.rollout import collect_rollouts
from prm_gym.rollout.collect import CollectConfig
from prm_gym.rollout.storage import load_episodes

PNG = b"\x89PNG\r\n\x1a\n"


def run_eval(folder, player, **settings):
    config = EvalConfig(split="tiny", num_envs=3, output_dir=str(folder), **settings)
    evaluate(player, config, progress=False)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Random with seeds 0 and 1 (they win different games), and the walkthrough agent."""
    root = tmp_path_factory.mktemp("evals")
    return {
        "random-0": run_eval(root / "random-0", RandomAgent(), agent="random", max_episode_steps=20, seed=0),
        "random-1": run_eval(root / "random-1", RandomAgent(), agent="random", max_episode_steps=20, seed=1),
        "walkthrough": run_eval(root / "walkthrough", WalkthroughAgent(), agent="walkthrough"),
    }


def summary_of(folder):
    return summarize(load_episodes(folder))


def test_seeds_merge_into_one_row_with_their_mean_and_std_and_other_runs_keep_their_numbers(runs, tmp_path):
    report = build_report(ReportConfig(runs=tuple(str(f) for f in runs.values()), output_dir=str(tmp_path)))
    random, walkthrough = report.rows
    assert (random.label, walkthrough.label) == ("random", "walkthrough")
    assert [run.folder for run in random.runs] == [runs["random-0"], runs["random-1"]]
    seeds = [summary_of(runs["random-0"]), summary_of(runs["random-1"])]
    assert seeds[0]["All"] != seeds[1]["All"]  # else the spread below would be 0 whatever the code does
    for column in seeds[0]:
        for metric in ("success", "actions"):
            values = [seed[column][metric] for seed in seeds]
            assert random.mean[column][metric] == pytest.approx(statistics.fmean(values))
            assert random.spread[column][metric] == pytest.approx(statistics.stdev(values))
    assert walkthrough.mean == summary_of(runs["walkthrough"]) and walkthrough.spread == {}

    data = json.loads((tmp_path / "report.json").read_text())
    assert [row["label"] for row in data["rows"]] == ["random", "walkthrough"]
    assert data["rows"][0]["seeds"] == [{"seed": 0, "openai.seed": None}, {"seed": 1, "openai.seed": None}]
    assert data["rows"][0]["per_seed"] == seeds and data["warnings"] == [] and data["success_vs_n"] == {}
    lines = (tmp_path / "report.md").read_text().splitlines()
    mean, spread = random.mean["All"], random.spread["All"]
    all_cell = f"{mean['success']:.1f} ± {spread['success']:.1f} / {mean['actions']:.1f} ± {spread['actions']:.1f}"
    assert f"| random | 2 | 6 of 6 games | {all_cell} |" in lines[6]
    assert lines[7].startswith("| walkthrough | 1 | 6 of 6 games | 100.0 / ")
    assert (tmp_path / "report.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "success_vs_n.png").exists()


def test_an_interrupted_run_is_a_row_of_its_own_marked_partial(runs, tmp_path):
    partial = tmp_path / "random-0-cut"
    shutil.copytree(runs["random-0"], partial)
    rows = (partial / "episodes.jsonl").read_text().splitlines(keepends=True)
    (partial / "episodes.jsonl").write_text("".join(r for r in rows if json.loads(r)["game_index"] < 3))
    config = ReportConfig(runs=(str(runs["random-0"]), str(runs["random-1"]), str(partial)), output_dir=str(tmp_path))
    report = build_report(config)
    assert [(row.label, row.games, len(row.runs)) for row in report.rows] == [
        ("random", "6 of 6 games", 2),
        ("random [random-0-cut]", "partial: 3 of 6 games", 1),
    ]
    assert report.rows[1].mean == summarize(load_episodes(runs["random-0"])[:3])
    assert "| random [random-0-cut] | 1 | partial: 3 of 6 games |" in report.markdown()
    assert report.warnings == ("random [random-0-cut]: partial: 3 of 6 games "
                               f"({partial} was interrupted: rerun its `prm-gym eval` to finish it).",)  # fmt: skip


def test_labels_name_rows_and_runs_over_other_games_get_a_warning(runs, tmp_path):
    three = run_eval(tmp_path / "three", WalkthroughAgent(), agent="walkthrough", num_games=3)
    config = ReportConfig(runs=(f"{runs['walkthrough']}=expert moves", str(three)), output_dir=str(tmp_path / "out"))
    report = build_report(config)
    assert [(row.label, row.games) for row in report.rows] == [
        ("expert moves", "6 of 6 games"),
        ("walkthrough", "3 of 3 games"),
    ]
    warning = "the runs were played on different games, so their numbers do not compare (6 games: expert moves; "
    assert report.warnings == (warning + "3 games: walkthrough).",)
    assert f"**Warning:** {warning}" in (tmp_path / "out" / "report.md").read_text()
    unlabelled = build_report(ReportConfig(runs=(str(runs["walkthrough"]), str(three)), output_dir=str(tmp_path)))
    assert [row.label for row in unlabelled.rows] == ["walkthrough (num_games=None)", "walkthrough (num_games=3)"]
    one_label = (f"{runs['walkthrough']}=pi", f"{three}=pi")
    with pytest.raises(ValueError, match="The label 'pi' names runs with different settings"):
        build_report(ReportConfig(runs=one_label, output_dir=str(tmp_path)))


def test_runs_of_copies_of_one_model_merge_and_runs_of_another_model_do_not(runs, tmp_path):
    """Adapters shipped from runs/ to benchmarks/ name their base model by another relative path: one model still."""
    base = tmp_path / "shared" / "base.gguf"
    base.parent.mkdir()
    base.write_bytes(b"base weights")

    def adapters(folder, weights):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(weights)
        config = {"base_model_name_or_path": os.path.relpath(base, folder), "r": 8}
        (folder / "adapter_config.json").write_text(json.dumps(config))
        return folder

    trained = adapters(tmp_path / "runs" / "q0" / "model", b"lora")
    shipped = adapters(tmp_path / "benchmarks" / "cpu" / "q0" / "model", b"lora")
    other = adapters(tmp_path / "runs" / "q1" / "model", b"LoRA")  # the same files and sizes, other weights
    assert (trained / "adapter_config.json").read_text() != (shipped / "adapter_config.json").read_text()

    def played_with(name, source, model):
        folder = tmp_path / name
        shutil.copytree(runs[source], folder)
        recorded = json.loads((folder / "config.json").read_text())
        recorded["config"]["model"] = str(model)
        (folder / "config.json").write_text(json.dumps(recorded))
        return f"{folder}=random, q0"

    copies = (played_with("a", "random-0", trained), played_with("b", "random-1", shipped))
    [row] = build_report(ReportConfig(runs=copies, output_dir=str(tmp_path / "out"))).rows
    assert (row.label, len(row.runs)) == ("random, q0", 2)
    assert [run.settings["model"] for run in row.runs] == [str(trained), str(trained)]
    another = (copies[0], played_with("c", "random-1", other))
    with pytest.raises(ValueError, match="The label 'random, q0' names runs with different settings"):
        build_report(ReportConfig(runs=another, output_dir=str(tmp_path / "out")))


def test_best_of_n_rows_that_differ_only_in_n_give_success_vs_n(tmp_path, monkeypatch):
    folders = []
    for n in (1, 2):
        agent = AgentConfig(agent="best-of-n", policy="random", n=n, mc_rollouts=1)
        config = dict(agent="best-of-n", policy="random", n=n, mc_rollouts=1, max_episode_steps=6, num_games=3)
        folders.append(run_eval(tmp_path / f"bon-{n}", make_agent(agent, seed=0, max_episode_steps=6), **config))
    policy = run_eval(tmp_path / "policy", RandomAgent(seed=0), agent="random", max_episode_steps=6, num_games=3)
    charted = []
    real_plot = report_module.plot_success_vs_n
    monkeypatch.setattr(report_module, "plot_success_vs_n", lambda *a: charted.append(a) or real_plot(*a))
    runs = (*(str(f) for f in folders), f"{policy}=the policy alone")
    report = build_report(ReportConfig(runs=runs, output_dir=str(tmp_path / "out")))
    assert [row.label for row in report.rows] == ["best-of-1(random, monte-carlo)", "best-of-2(random, monte-carlo)",
                                                  "the policy alone"]  # fmt: skip
    successes = [summary_of(folder)["All"]["success"] for folder in folders]
    assert report.success_vs_n == {"best-of-N(random, monte-carlo)": [(1, successes[0], 0.0), (2, successes[1], 0.0)]}
    assert (tmp_path / "out" / "success_vs_n.png").read_bytes().startswith(PNG)
    # beside the curve, what Best-of-N is to beat: the other complete rows, as reference lines
    assert charted[0][2] == {"the policy alone": summary_of(policy)["All"]["success"]}
    # labelled rows name their curve: the largest N's label, its N written as N
    labelled = (f"{folders[0]}=Best-of-1(pi, MC)", f"{folders[1]}=Best-of-2(pi, MC)")
    report = build_report(ReportConfig(runs=labelled, output_dir=str(tmp_path / "labelled")))
    assert list(report.success_vs_n) == ["Best-of-N(pi, MC)"]


def test_the_command_prints_the_table_with_the_paper_rows(runs, tmp_path, capsys):
    assert main(["report", str(runs["walkthrough"]), "--paper", "--output-dir", str(tmp_path), "--title", "T"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# T" and out[6].startswith("| walkthrough | 1 | 6 of 6 games | 100.0 / ")
    assert out[7 : 7 + len(PAPER_TABLE_1)] == [
        f"| {name} (paper) | – | 134 (valid_unseen) | {value:.1f} / – | – | – | – | – | – | – |"
        for name, value in PAPER_TABLE_1.items()
    ]
    assert out[-1] == f"Wrote {tmp_path}: report.md, report.json, report.png"


def test_a_folder_that_is_not_an_evaluation_is_one_clear_error(runs, tmp_path, capsys):
    rollouts = CollectConfig(split="tiny", num_games=1, repeats=1, max_episode_steps=2, num_envs=1,
                             vectorization="sync", output_dir=str(tmp_path / "rollouts"))  # fmt: skip
    collect_rollouts(RandomAgent(), rollouts, progress=False)
    cases = {
        tmp_path / "empty": f"No episodes at {tmp_path / 'empty'}",
        tmp_path / "rollouts": f"{tmp_path / 'rollouts'} holds a 'collect' run, not an evaluation",
    }
    (tmp_path / "empty").mkdir()
    for folder, message in cases.items():
        assert main(["report", str(runs["walkthrough"]), str(folder), "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"prm-gym: error: {message}"), err
    assert main(["report", "--output-dir", str(tmp_path / "out")]) == 2
    assert "Give at least one evaluation folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
