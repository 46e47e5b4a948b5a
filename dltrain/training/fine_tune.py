"""The fine-tune schedule (fastai's ``fine_tune``): the first ``model.freeze_epochs`` epochs
train with ``model.freeze``'s stages frozen, then everything trains.

What is frozen follows from the epoch number alone, set at the start of each epoch, so a
resumed run (even one stopped inside an epoch) trains its epochs as the uninterrupted run did.
The optimizer holds every parameter from the start: a frozen one has no gradient and torch's
optimizers skip it, so unfreezing needs no new optimizer.
"""

from __future__ import annotations

import logging

from dltrain.models.transfer import Freeze

log = logging.getLogger("dltrain")


class FineTuneSchedule:
    """Called with the number of each epoch as it starts (the trainer's ``on_epoch_start``).

    Args:
        freeze: the stages to keep frozen (already frozen or not).
        freeze_epochs: epochs 1..K train frozen; from epoch K + 1 everything trains.
    """

    def __init__(self, freeze: Freeze, freeze_epochs: int) -> None:
        self.freeze = freeze
        self.freeze_epochs = freeze_epochs

    def __call__(self, epoch: int) -> None:
        if epoch <= self.freeze_epochs:
            self.freeze.apply()
        elif self.freeze.active:
            unfrozen = self.freeze.release()
            log.info("epoch %d: unfreezing the backbone (%s parameters)", epoch, f"{unfrozen:,}")

    def describe(self) -> str:
        """One line for the model summary: when the frozen stages train again."""
        epochs = "epoch 1" if self.freeze_epochs == 1 else f"epochs 1-{self.freeze_epochs}"
        return (f"Frozen for {epochs} (model.freeze_epochs={self.freeze_epochs}): everything trains from "
                f"epoch {self.freeze_epochs + 1}")
