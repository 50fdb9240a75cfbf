"""Labelled examples as one batch of tensors: right padding that attention and the loss both skip.

    batch = collate(examples, pad_id)     # {"input_ids", "labels", "attention_mask"}, each [len(examples), longest]

An example is anything with `.input_ids` and `.labels` (equal-length lists of ints), such as `helpers.finetune.Example`;
a label of `IGNORE_INDEX` is a token the loss does not score (the prompt, padding). Training (`helpers.finetune`) and
scoring (`helpers.evaluation.answer_loss`) batch the same examples through this one function.
"""

from __future__ import annotations

from typing import Sequence

import torch

IGNORE_INDEX = -100  # a label the loss skips (PyTorch's cross_entropy default ignore_index)


def collate(examples: Sequence, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad labelled examples into one batch. Padding is masked out of attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


__all__ = ["IGNORE_INDEX", "collate"]
