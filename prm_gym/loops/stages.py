"""What the loops share: a run folder that remembers its finished stages, and the stages that are not one call.

A loop (AgentPRM, InversePRM) is a sequence of stages, each one of the library's commands writing its own folder
inside the run folder. :class:`LoopRun` records each stage's result in ``loop.json`` when it ends, so a rerun
skips the stages already done and resumes in the first one not done (which resumes from its own checkpoints or
episodes). The run's settings are recorded too: a rerun with other settings is refused, naming them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from prm_gym.io import atomic_write_text, config_differences, read_json_object
from prm_gym.prm.target_summary import target_shares
from prm_gym.prm.targets import TargetsConfig, compute_targets, save_targets
from prm_gym.rollout.storage import load_episodes, load_run_config

__all__ = ["LOOP_FILE", "LoopRun", "make_targets"]

logger = logging.getLogger(__name__)

#: The run folder's record: the settings and each finished stage's result.
LOOP_FILE = "loop.json"


class LoopRun:
    """A loop's run folder: its settings and the results of its finished stages, kept in ``loop.json``.

    Example:
        >>> import tempfile
        >>> run = LoopRun(tempfile.mkdtemp(), {"iterations": 1})
        >>> run.stage("first", lambda: "made")
        'made'
        >>> run.stage("first", lambda: "made again")  # done: its recorded result, nothing run
        'made'
    """

    def __init__(self, folder: str | Path, settings: Mapping[str, Any], ignored: Collection[str] = ()) -> None:
        """Open (or start) the run in ``folder``.

        Raises:
            ValueError: when ``folder`` holds a run with other settings (those in ``ignored`` may differ).
        """
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))
        self.finished: dict[str, Any] = {}
        path = self.folder / LOOP_FILE
        if path.is_file():
            recorded = read_json_object(path, remedy="delete it to start the run over")
            differences = config_differences(recorded.get("settings") or {}, self.settings, ignored=ignored)
            if differences:
                raise ValueError(
                    f"{self.folder} holds a run with other settings ({'; '.join(differences)}): choose another "
                    "output_dir, or rerun with the recorded settings to resume it."
                )
            self.finished = dict(recorded.get("finished") or {})

    def stage(self, name: str, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Return the stage's recorded result if it is done; else ``run(*args, **kwargs)``, record and return it.

        The result must be JSON (a folder's path, say): it is what later stages, in this run or a rerun, read.
        """
        if name in self.finished:
            logger.info("%s: done already.", name)
            return self.finished[name]
        logger.info("%s ...", name)
        result = run(*args, **kwargs)
        self.finished[name] = result
        record = {"settings": self.settings, "finished": self.finished}
        atomic_write_text(self.folder / LOOP_FILE, json.dumps(record, indent=2, default=str) + "\n")
        return result


def make_targets(
    rollouts: str | Path, output_dir: str | Path, config: TargetsConfig, *, progress: bool = True
) -> tuple[str, list[str]]:
    """Compute the Monte-Carlo targets of a rollouts folder and save them in ``output_dir`` (``prm-gym targets``).

    Returns:
        The targets folder, and lines summarising them: how many, and the won rollouts and positive targets of
        each kind of rollout (from the game's start, from an expert prefix).

    Raises:
        ValueError: when the rollouts give no target (see :func:`~prm_gym.prm.targets.save_targets`).
    """
    source = load_run_config(rollouts)  # read first: a damaged file must not wait for the targets
    episodes = load_episodes(rollouts)
    targets = compute_targets(episodes, config, progress=progress)
    folder = save_targets(targets, output_dir, config, source=source)
    states = len({row.state_key for row in targets})
    lines = [f"{len(targets)} targets at {states} states from {len(episodes)} episodes in {folder}"]
    return str(folder), lines + [str(shares) for shares in target_shares(episodes, targets, config)]
