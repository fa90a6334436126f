"""The paper's loops, stage by stage in one resumable run folder: AgentPRM and InversePRM.

:func:`run_agentprm` and :func:`run_inverse_prm` run them; their settings are :mod:`prm_gym.loops.config`'s.

Example:
    >>> from prm_gym.loops import AgentPRMConfig
    >>> AgentPRMConfig(policy="runs/sft/model").iterations
    1
"""

from prm_gym.loops.config import AgentPRMConfig, ImprovementConfig, InversePRMConfig, LoopConfig

__all__ = ["AgentPRMConfig", "ImprovementConfig", "InversePRMConfig", "LoopConfig", "run_agentprm", "run_inverse_prm"]


def __getattr__(name: str) -> object:
    """Import the loops themselves (and with them the report's plotting) only when they are asked for."""
    if name == "run_agentprm":
        from prm_gym.loops.agentprm import run_agentprm

        return run_agentprm
    if name == "run_inverse_prm":
        from prm_gym.loops.inverse_prm import run_inverse_prm

        return run_inverse_prm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
