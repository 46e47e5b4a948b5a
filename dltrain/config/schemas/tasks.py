"""``task=``: what a training step computes (the training objective), one schema per option."""

from dataclasses import dataclass


@dataclass
class SupervisedTaskConfig:
    """``task=supervised``: the model's output is compared with the data's targets by ``loss=``."""

    name: str = "supervised"
