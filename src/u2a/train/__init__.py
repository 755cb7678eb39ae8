"""Training: optimizer and LR schedule, checkpoints, and the Trainer."""

from u2a.train.optim import build_optimizer, build_scheduler, lr_factor, schedule_lengths

__all__ = ["Trainer", "build_optimizer", "build_scheduler", "lr_factor", "schedule_lengths"]


def __getattr__(name: str):  # the Trainer pulls in accelerate: import it on first use
    if name == "Trainer":
        from u2a.train.trainer import Trainer

        return Trainer
    raise AttributeError(name)
