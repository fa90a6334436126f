"""Gymnasium wrappers: process rewards from reward models, for single and vector envs."""

from prm_gym.wrappers.process_reward import ProcessRewardConfig, ProcessRewardWrapper, VectorProcessRewardWrapper

__all__ = ["ProcessRewardConfig", "ProcessRewardWrapper", "VectorProcessRewardWrapper"]
