"""The learning-rate cooldown at the end of training (config section ``cooldown``).

Over the last ``fraction`` of the iterations every optimizer's learning rates fall linearly to ``factor`` times
their value. It multiplies whatever rate a group has (the methods' per-epoch ExponentialLR, a recovery's slow-down),
and records the factor it applied in the group (saved with the optimizer), so a resumed or extended run picks up
the right rate.
"""
from __future__ import annotations

import torch

__all__ = ["cooldown_scale", "apply_cooldown"]


def cooldown_scale(iteration: int, iterations: int, fraction: float, factor: float) -> float:
    """The multiplier of the learning rates at ``iteration`` (1-based) of ``iterations``: 1 until the last
    ``fraction`` of them, then linearly down to ``factor`` at the last iteration."""
    start = iterations * (1.0 - fraction)
    if fraction <= 0.0 or iteration <= start:
        return 1.0
    return 1.0 - (1.0 - factor) * min(1.0, (iteration - start) / (iterations - start))


def apply_cooldown(optimizers: dict[str, torch.optim.Optimizer], scale: float) -> None:
    """Set every group's rate to ``scale`` times its rate without the cooldown."""
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] *= scale / group.get("cooldown", 1.0)
            group["cooldown"] = scale
