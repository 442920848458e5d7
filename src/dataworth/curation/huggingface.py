"""Online curation inside the Hugging Face ``Trainer`` (``pip install 'dataworth[huggingface]'``).

    trainer = CuratedTrainer(model=model, args=args, train_dataset=train, validation_data=batch_of_clean_rows,
                             curation={"method": "lai", "policy": "drop-negative", "warmup_steps": 100})
    trainer.train()
    trainer.curator.log       # one row per training row seen

``validation_data`` is one batch as the model takes it (a dict of tensors with ``labels``). Each training batch's
loss is the :class:`~dataworth.curation.Curator`'s: the model's logits are scored against the validation cache,
and the loss is the cross-entropy (or ``curation["loss"]``) over the rows kept. With ``method="lai-adam"`` the
Trainer's own AdamW is the preconditioner.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from dataworth.checks import InputError
from dataworth.curation.curator import Curator


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).logits


class CuratedTrainer(Trainer):
    """A ``transformers.Trainer`` whose training loss is curated online (see the module docstring)."""

    def __init__(self, *args: Any, validation_data: dict[str, Any], curation: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(validation_data, dict) or "labels" not in validation_data:
            raise InputError("validation_data must be one batch as the model takes it: a dict of tensors with 'labels'")
        self.validation_data = dict(validation_data)
        self.curation = dict(curation or {})
        self.curator: Curator | None = None

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor:
        if return_outputs or not model.training:  # evaluation and prediction: the plain loss
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.curator is None:
            features = {k: v for k, v in self.validation_data.items() if k != "labels"}
            options = dict(self.curation)
            if options.get("method") == "lai-adam":
                options.setdefault("optimizer", self.optimizer)
            self.curator = Curator(model, validation=(features, self.validation_data["labels"]), forward=_logits, **options)
        batch = dict(inputs)
        labels = batch.pop("labels")
        return self.curator.loss(batch, labels)
