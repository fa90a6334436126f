"""The paper's loops, stage by stage in one resumable run folder: AgentPRM (:func:`run_agentprm`).

Example:
    >>> from prm_gym.loops import AgentPRMConfig
    >>> AgentPRMConfig(policy="runs/sft/model").iterations
    1
"""

from prm_gym.loops.agentprm_config import AgentPRMConfig, ImprovementConfig

__all__ = ["AgentPRMConfig", "ImprovementConfig", "run_agentprm"]


def __getattr__(name: str) -> object:
    """Import the loop itself (and with it the report's plotting) only when it is asked for."""
    if name == "run_agentprm":
        from prm_gym.loops.agentprm import run_agentprm

        return run_agentprm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
