"""Fine-tuning Grok 2 with LoRA and QLoRA: the names lesson 05 and `scripts/train_lora.py` use, from one place.

    rows = load_chat_jsonl("data/finetune/faq_fr_train.jsonl")        # validated: every bad row reported, none dropped
    train_set = encode_dataset(tokenizer, rows, max_len=128)          # the loss sees the assistant's answers only
    model = apply_lora(base, LoraSettings(rank=8))                    # attention, dense MLP, experts; router frozen
    result = train(model, train_set, TrainSettings(steps=60, batch_size=8), heldout=heldout_set,
                   checkpoint_dir=workspace_dir() / "lora-checkpoints")   # resumes where an interrupted run stopped
    save_adapter(model, workspace_dir() / "adapters" / "faq-fr")      # atomic, a few MB, never over others' files

The parts, one concern each:
    data         JSONL rows, validation, tokenizing with the answer-only loss mask, the seeded batch order
    adapters     LoRA targets and settings, apply_lora (QLoRA too), save / load / compare adapters
    training     TrainSettings, the loop (accumulation, schedule, accelerate), time and memory
    checkpoints  checkpoint folders: atomic saves, exact resume, one run per folder
    folders      atomic folder writes and their recovery after a kill
    plans        memory plans for LoRA / QLoRA and the GPU sets that hold them
    launch       `accelerate launch` commands, and a 2-process rehearsal on CPU
Answer metrics (token F1, exact match, answer loss) live in `helpers.evaluation`, the live loss curve in
`helpers.widgets`; both are importable from here too, as lesson 05 uses them.
"""

from __future__ import annotations

from ..batches import IGNORE_INDEX
from ..evaluation import (
    AnswerReport,
    answer_loss,
    evaluate_answers,
    exact_match,
    normalize_answer,
    summed_label_loss,
    token_f1,
)
from .adapters import (
    ADAPTER_RECORD,
    DEFAULT_PARTS,
    LORA_TARGET_PARTS,
    LoraSettings,
    apply_lora,
    check_adapter_destination,
    count_parameters,
    find_lora_targets,
    is_quantized,
    keep_4bit_differentiable,
    load_adapter,
    lora_config,
    max_logit_difference,
    save_adapter,
)
from .checkpoints import CHECKPOINT_FORMAT, list_checkpoints, set_aside_run
from .data import (
    CHAT_ROLES,
    CONTROL_TOKENS,
    MAX_FILE_BYTES,
    MAX_LINE_BYTES,
    DataError,
    Example,
    check_heldout_is_new,
    collate,
    encode_conversation,
    encode_dataset,
    load_chat_jsonl,
    micro_batch_indices,
    validate_chat_rows,
)
from .launch import launch_command, rehearse_on_cpu
from .plans import GPU_KINDS, LoraPlan, plan_lora
from .training import (
    TrainResult,
    TrainSettings,
    describe_memory,
    make_optimizer,
    memory_snapshot,
    throughput,
    train,
)

_FROM_WIDGETS = ("LossCurve",)  # imported when first used: the training script never loads ipywidgets


def __getattr__(name: str):
    if name in _FROM_WIDGETS:
        from .. import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LORA_TARGET_PARTS", "DEFAULT_PARTS", "CHAT_ROLES", "CONTROL_TOKENS", "IGNORE_INDEX", "MAX_FILE_BYTES",
    "MAX_LINE_BYTES", "DataError", "validate_chat_rows", "load_chat_jsonl", "check_heldout_is_new", "Example",
    "encode_conversation", "encode_dataset", "collate", "micro_batch_indices", "LoraSettings", "find_lora_targets",
    "lora_config", "is_quantized", "keep_4bit_differentiable", "apply_lora", "count_parameters",
    "check_adapter_destination", "ADAPTER_RECORD", "save_adapter", "load_adapter", "max_logit_difference",
    "TrainSettings", "TrainResult", "make_optimizer", "answer_loss", "summed_label_loss", "CHECKPOINT_FORMAT",
    "list_checkpoints", "set_aside_run", "memory_snapshot", "describe_memory", "train", "throughput",
    "normalize_answer", "token_f1", "exact_match", "AnswerReport", "evaluate_answers", "GPU_KINDS",
    "LoraPlan", "plan_lora", "launch_command", "rehearse_on_cpu", "LossCurve",
]
