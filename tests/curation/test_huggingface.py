"""CuratedTrainer: the Trainer's updates equal a plain loop with the same Curator (tiny BERT built from a config)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from dataworth.curation import Curator  # noqa: E402
from dataworth.curation.huggingface import CuratedTrainer  # noqa: E402

ROWS, TOKENS, STEPS = 16, 6, 3


class Rows(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)


def test_curated_trainer_equals_a_plain_loop_with_the_curator(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    ids, labels = torch.randint(1, 40, (ROWS, TOKENS), generator=generator), torch.randint(0, 3, (ROWS,), generator=generator)
    val_ids, val_labels = torch.randint(1, 40, (8, TOKENS), generator=generator), torch.randint(0, 3, (8,), generator=generator)
    model = tiny_bert()
    reference = copy.deepcopy(model)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=ROWS, max_steps=STEPS, learning_rate=1e-2,
                                          lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, report_to=[], use_cpu=True,
                                          save_strategy="no", logging_strategy="no", disable_tqdm=True)
    curation = {"method": "lai", "policy": "drop-negative", "refresh_every": 1}
    trainer = CuratedTrainer(model=model, args=args, train_dataset=Rows(ids, labels), curation=curation,
                             validation_data={"input_ids": val_ids, "labels": val_labels})
    trainer.train()
    log = trainer.curator.log
    assert len(log) == STEPS * ROWS and 0 < (~log["kept"]).sum() < len(log)

    curator = Curator(reference, validation=({"input_ids": val_ids}, val_labels), forward=lambda m, b: m(**b).logits, **curation)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.0)
    reference.train()
    for _ in range(STEPS):
        loss = curator.loss({"input_ids": ids}, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # the Trainer shuffles rows within the batch: compare the decisions as sets of row scores per step
    for step in range(STEPS):
        ours = np.sort(curator.log.loc[curator.log.step == step, "score"].to_numpy())
        theirs = np.sort(log.loc[log.step == step, "score"].to_numpy())
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-7)
    for (name, a), (_, b) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
