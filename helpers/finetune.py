"""Fine-tuning Grok 2 with LoRA and QLoRA: data, adapters, a resumable training loop, evaluation, memory plans.

Lesson 05 walks through every part; `scripts/train_lora.py` runs the same loop under `accelerate launch`.

    rows = load_chat_jsonl("data/finetune/faq_fr_train.jsonl")        # validated: every bad row reported, none dropped
    train_set = encode_dataset(tokenizer, rows, max_len=128)          # the loss sees the assistant's answers only
    model = apply_lora(base, LoraSettings(rank=8))                    # attention, dense MLP, experts; router frozen
    result = train(model, train_set, TrainSettings(steps=60, batch_size=8), heldout=heldout_set,
                   checkpoint_dir=workspace_dir() / "lora-checkpoints")   # resumes where an interrupted run stopped
    save_adapter(model, workspace_dir() / "adapters" / "faq-fr")      # atomic, a few MB

Determinism: the batch of every step is a pure function of (seed, step), and the random state (LoRA dropout) is
re-seeded from (seed, step, micro-batch, rank) before every forward pass. A run resumed from a checkpoint therefore
replays exactly what the uninterrupted run would have done: on CPU the final weights are bit-for-bit identical.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import CourseError
from .model_parts import is_router, is_router_parameter
from .units import GB, format_bytes

# ------------------------------------------------------------------------------------------------ LoRA targets

# Grok 2's linear layers by part (names as in the released checkpoint). PEFT matches a target against the end of a
# module's name, so "w1" finds every `block_sparse_moe.experts.E.w1` and "gate_proj" the dense MLP's - while the
# router, `block_sparse_moe.gate`, matches none of them and stays frozen.
LORA_TARGET_PARTS: dict[str, tuple[str, ...]] = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "dense_mlp": ("gate_proj", "up_proj", "down_proj"),
    "experts": ("w1", "w2", "w3"),
}
DEFAULT_PARTS = ("attention", "dense_mlp", "experts")
CHAT_ROLES = ("system", "user", "assistant")
CONTROL_TOKENS = ("<|separator|>", "<|eos|>", "<|pad|>")
IGNORE_INDEX = -100
CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------------------------------------------------- data


class DataError(CourseError):
    """Malformed fine-tuning rows. `problems` lists every one as "line N: what is wrong"."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        shown = "\n".join(problems[:50]) + (f"\n... and {len(problems) - 50} more" if len(problems) > 50 else "")
        super().__init__(
            f"{len(problems)} problem(s) in {source}; nothing was loaded:\n{shown}",
            'Fix each line listed. A row is one JSON object per line: {"messages": [{"role": "user", "content": '
            '"..."}, {"role": "assistant", "content": "..."}]} - an optional system message first, then user and '
            "assistant turns alternating, ending with the assistant's answer.",
        )


def _message_problems(messages) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ['"messages" must be a non-empty list']
    found = []
    roles = []
    for index, message in enumerate(messages):
        where = f"message {index}"
        if not isinstance(message, dict):
            found.append(f"{where} is not an object")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            found.append(f"{where} has role {role!r}; use one of {', '.join(CHAT_ROLES)}")
        if not isinstance(content, str) or not content.strip():
            found.append(f'{where} ({role}) has no text in "content"')
        elif any(token in content for token in CONTROL_TOKENS):
            found.append(f"{where} ({role}) contains a control token as text (the model would stop there)")
        unknown = set(message) - {"role", "content"}
        if unknown:
            found.append(f"{where} has unknown key(s) {sorted(unknown)}")
        roles.append(role)
    if found:
        return found
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        found.append("a system message may only come first")
    elif not body:
        found.append("no user or assistant message")
    else:
        expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
        if body != expected:
            found.append(f"turns must alternate user, assistant, ...; got {', '.join(body)}")
        elif body[-1] != "assistant":
            found.append("the last message must be the assistant's answer (that is what is learned)")
    return found


def validate_chat_rows(lines: Iterable[str], source: str = "<rows>") -> list[list[dict]]:
    """Parse JSONL chat rows; raise DataError listing *every* malformed line ("line N: ..."). Nothing is dropped."""
    conversations, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            problems.append(f"line {number}: empty line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(row, dict) or "messages" not in row:
            problems.append(f'line {number}: expected an object with a "messages" list')
            continue
        row_problems = _message_problems(row["messages"])
        problems += [f"line {number}: {problem}" for problem in row_problems]
        if not row_problems:
            conversations.append(row["messages"])
    if problems:
        raise DataError(source, problems)
    if not conversations:
        raise DataError(source, ["no rows at all"])
    return conversations


def load_chat_jsonl(path: str | Path) -> list[list[dict]]:
    """Conversations from a JSONL file, validated (see `validate_chat_rows`)."""
    path = Path(path)
    if not path.exists():
        raise CourseError(f"{path} does not exist.", "Check the path (data/finetune/ holds the course's sets).")
    return validate_chat_rows(path.read_text(encoding="utf-8").splitlines(), source=str(path))


def check_heldout_is_new(train: list[list[dict]], heldout: list[list[dict]]) -> None:
    """A held-out question that also appears in training measures recitation, not the skill: refuse it."""
    def questions(conversations):
        return {m["content"].strip().lower() for c in conversations for m in c if m["role"] == "user"}

    leaked = sorted(questions(train) & questions(heldout))
    if leaked:
        raise CourseError(f"{len(leaked)} held-out question(s) also appear in the training set: {leaked[:5]}",
                          "Move them to one split only: the held-out score must be measured on unseen wording.")


@dataclass(frozen=True)
class Example:
    """One tokenized conversation. `labels` is -100 wherever the loss must not look (everything but the answers)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    row: int  # 1-based position in its file

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the loss learns: each answer and its end-of-turn token.

    For Grok 2 an answer renders as "Assistant: <answer><|separator|>\\n\\n" after "...Assistant:" - the span is
    " <answer><|separator|>" (the space belongs to the first answer token, exactly as at generation time), and the
    trailing newlines are left out. Works for any tokenizer whose chat template renders prefixes consistently.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (text.startswith(prompt) and text.startswith(upto) and upto.startswith(prompt)):
            raise CourseError("This tokenizer's chat template does not render conversations prefix by prefix.",
                              "Use a model whose template renders each turn independently (Grok 2's does).")
        answer = upto[len(prompt):].rstrip()
        spans.append((len(prompt), len(prompt) + len(answer)))
    return text, spans


def encode_conversation(tokenizer, messages: list[dict], row: int = 0) -> Example:
    """Token ids of the whole conversation, labels only on the assistant's answers (+ their end-of-turn token)."""
    text, spans = _assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    labels = []
    for token, (start, end) in zip(ids, offsets):
        learned = any(start >= s and end <= e and end > start for s, e in spans)
        labels.append(token if learned else IGNORE_INDEX)
    return Example(tuple(ids), tuple(labels), row)


def encode_dataset(tokenizer, conversations: list[list[dict]], max_len: int) -> list[Example]:
    """Encode every conversation; refuse (listing rows) any longer than `max_len` tokens instead of cutting it."""
    examples = [encode_conversation(tokenizer, c, row=i) for i, c in enumerate(conversations, start=1)]
    too_long = [f"line {e.row}: {len(e.input_ids)} tokens" for e in examples if len(e.input_ids) > max_len]
    if too_long:
        raise CourseError(f"{len(too_long)} conversation(s) exceed max_len={max_len} tokens: {too_long[:10]}",
                          "Shorten them, or raise max_len (the profile's sizes.max_seq_len); nothing is truncated "
                          "silently, since a cut answer would teach the model to stop mid-sentence.")
    empty = [f"line {e.row}" for e in examples if e.answer_tokens == 0]
    if empty:
        raise CourseError(f"No answer tokens to learn in {empty[:10]}", "Each row must end with an assistant answer.")
    return examples


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training (padding is masked out of attention and loss)."""
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


@lru_cache(maxsize=64)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=generator).tolist())


def micro_batch_indices(n: int, batch_size: int, seed: int, micro_batch: int) -> list[int]:
    """Example indices of global micro-batch number `micro_batch`: a fresh shuffle every epoch, a pure function of
    (seed, micro_batch) - so any step's batch can be recomputed after a restart without saved sampler state."""
    start = micro_batch * batch_size
    return [_epoch_order(n, seed, k // n)[k % n] for k in range(start, start + batch_size)]


# ---------------------------------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class LoraSettings:
    """What LoRA trains, and how strongly.

    rank     r: each adapted weight W (out x in) gets W + (alpha / r) * B @ A with A (r x in), B (out x r). Larger r
             learns more, costs r * (in + out) parameters per matrix. 8-16 is typical; 64+ rarely helps.
    alpha    scales the update: alpha / r is the multiplier (alpha = 2r is a common start). Changing r with alpha
             fixed changes the effective learning rate.
    dropout  applied to the adapter's input during training only: regularises small data sets.
    parts    which linear layers get adapters: "attention" (q/k/v/o), "dense_mlp" (Grok 2's always-on MLP),
             "experts" (every expert's w1/w2/w3). The router is never adapted (see lesson 05).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    parts: tuple[str, ...] = DEFAULT_PARTS

    def __post_init__(self):
        unknown = set(self.parts) - set(LORA_TARGET_PARTS)
        if unknown:
            raise CourseError(f"Unknown LoRA part(s) {sorted(unknown)}.", f"Use some of {', '.join(LORA_TARGET_PARTS)}.")
        if self.rank < 1:
            raise CourseError(f"LoRA rank must be >= 1, got {self.rank}.", "8 or 16 is a good start.")

    @classmethod
    def from_profile(cls, profile=None, **overrides) -> LoraSettings:
        from .profiles import get_profile

        sizes = (profile if hasattr(profile, "sizes") else get_profile(profile)).sizes
        values = dict(rank=sizes.lora_rank, alpha=2.0 * sizes.lora_rank)
        values.update(overrides)
        return cls(**values)

    @property
    def suffixes(self) -> tuple[str, ...]:
        return tuple(s for part in self.parts for s in LORA_TARGET_PARTS[part])


def _is_linear(module) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")  # bitsandbytes layers (subclass Linear anyway)


def find_lora_targets(model, settings: LoraSettings) -> dict[str, list[str]]:
    """{part: module names} of the linear layers LoRA will adapt in this model (parts absent here map to [])."""
    found: dict[str, list[str]] = {part: [] for part in settings.parts}
    for name, module in model.named_modules():
        if not _is_linear(module) or is_router(name):
            continue
        last = name.rsplit(".", 1)[-1]
        for part in settings.parts:
            if last in LORA_TARGET_PARTS[part]:
                found[part].append(name)
    return found


def lora_config(model, settings: LoraSettings):
    """A PEFT `LoraConfig` for the suffixes of `settings.parts` that exist as linear layers in `model`."""
    from peft import LoraConfig

    found = find_lora_targets(model, settings)
    present = sorted({name.rsplit(".", 1)[-1] for names in found.values() for name in names})
    if not present:
        raise CourseError(f"None of the LoRA targets {settings.suffixes} is a linear layer in this model.",
                          "Check `model` with print(model); pass parts that exist (e.g. parts=('attention',)).")
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=present, bias="none", task_type="CAUSAL_LM")


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def keep_4bit_differentiable(model) -> int:
    """Stop bitsandbytes from switching 4-bit layers to its CPU inference kernel, which has no backward pass.

    bitsandbytes 0.50, on CPUs with AVX512-BF16, repacks a 4-bit weight for a faster kernel the first time the layer
    runs in eval mode without gradients (e.g. a held-out evaluation). Training through a repacked layer then loses
    the gradient that should flow through the frozen weight to the layers below (PyTorch only warns:
    "bitsandbytes::gemv_4bit: an autograd kernel was not registered"). This turns the repacking off and undoes it
    where it already happened. Returns how many layers were undone."""
    undone = 0
    for module in model.modules():
        if type(module).__name__ != "Linear4bit" or not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(module.weight.data, state)
            undone += 1
    return undone


def apply_lora(model, settings: LoraSettings = LoraSettings(), *, seed: int = 0, gradient_checkpointing: bool = False,
               sharded: bool = False):
    """Wrap `model` with fresh LoRA adapters (PEFT). Everything else is frozen - the router included.

    On a 4-bit model (QLoRA) the parameters left unquantized (norms, embeddings, LM head) are cast to fp32 first
    (`prepare_model_for_kbit_training`) for numerically stable training. `sharded=True` (FSDP / ZeRO-3 QLoRA, as in
    scripts/train_lora.py): skip that cast and keep the adapters in the base's 16-bit dtype - FSDP needs one dtype
    per shard unit (what TRL and PEFT's FSDP-QLoRA recipe do).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    config = lora_config(model, settings)
    if is_quantized(model):
        keep_4bit_differentiable(model)
    if is_quantized(model) and not sharded:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)  # A is initialised at random (B at zero: training starts exactly at the base model)
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=not sharded)
    frozen_router = [n for n, p in peft_model.named_parameters()
                     if p.requires_grad and is_router_parameter(n)]
    if frozen_router:
        raise CourseError(f"Router parameters are trainable: {frozen_router[:3]}", "Do not target the router.")
    return peft_model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights are counted as the numbers they stand for, not packed bytes."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_adapter(model, directory: str | Path, accelerator=None) -> dict:
    """Save only the adapter (PEFT's adapter_model.safetensors + adapter_config.json), atomically: written to a
    temporary folder beside `directory`, then swapped in - an interruption never leaves a half-written adapter.
    With an accelerator (DDP/FSDP) every process must call it; the full adapter is gathered on the first process,
    which writes it."""
    directory = Path(directory)
    if accelerator is None:
        peft_model, state = getattr(model, "module", model), None
    else:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(model, options=_state_dict_options(cpu_offload=True, ignore_frozen_params=True))
        peft_model = accelerator.unwrap_model(model)
    if accelerator is None or accelerator.is_main_process:
        _write_directory_atomically(
            directory, lambda staging: peft_model.save_pretrained(staging, state_dict=state, safe_serialization=True))
    if accelerator is not None:
        accelerator.wait_for_everyone()
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    return {"path": str(directory), "files": files, "bytes": sum(files.values())}


def load_adapter(base_model, directory: str | Path, trainable: bool = False):
    """`base_model` + the adapter saved in `directory` (PEFT `PeftModel.from_pretrained`)."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").exists():
        raise CourseError(f"No adapter_config.json in {directory}.", "Pass the folder save_adapter() wrote.")
    return PeftModel.from_pretrained(base_model, directory, is_trainable=trainable)


@torch.no_grad()
def max_logit_difference(model_a, model_b, tokenizer, conversations: list[list[dict]]) -> float:
    """Largest absolute difference between the two models' logits on the rendered conversations."""
    worst = 0.0
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        a = model_a(input_ids=ids.to(model_a.device), use_cache=False).logits.float().cpu()
        b = model_b(input_ids=ids.to(model_b.device), use_cache=False).logits.float().cpu()
        worst = max(worst, (a - b).abs().max().item())
    return worst


# ---------------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainSettings:
    """The optimisation. The effective batch is batch_size x grad_accum_steps x processes."""

    steps: int
    batch_size: int
    grad_accum_steps: int = 1
    learning_rate: float = 2e-3
    warmup_steps: int = 5
    min_lr_fraction: float = 0.1  # cosine decay ends at this fraction of the peak
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    optimizer: str = "auto"  # "auto", "adamw", "sgd", "paged_adamw_32bit", "paged_adamw_8bit"
    eval_every: int = 10  # held-out loss every N steps (and at the first and last step)
    save_every: int = 10  # checkpoint every N steps (and at the last step)
    keep_checkpoints: int = 2

    # Settings that must match for a resumed run to be the same run.
    SCHEDULE_FIELDS = ("steps", "batch_size", "grad_accum_steps", "learning_rate", "warmup_steps", "min_lr_fraction",
                       "weight_decay", "max_grad_norm", "seed", "optimizer")

    @classmethod
    def from_profile(cls, profile=None, **overrides) -> TrainSettings:
        from .profiles import get_profile

        sizes = (profile if hasattr(profile, "sizes") else get_profile(profile)).sizes
        values = dict(steps=sizes.train_steps, batch_size=sizes.train_batch_size, grad_accum_steps=sizes.grad_accum_steps)
        values.update(overrides)
        return cls(**values)

    def learning_rate_at(self, step: int) -> float:
        """Linear warm-up over `warmup_steps`, then cosine decay to `min_lr_fraction` of the peak (step is 0-based)."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.learning_rate * (self.min_lr_fraction + (1 - self.min_lr_fraction) * cosine)

    def schedule(self) -> dict:
        return {name: getattr(self, name) for name in self.SCHEDULE_FIELDS}


@dataclass
class TrainResult:
    steps_done: int
    history: list[dict]
    seconds: float  # wall time of this call
    interrupted: bool
    resumed_from: int | None
    checkpoint: Path | None
    memory: dict = field(default_factory=dict)

    @property
    def train_losses(self) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in self.history if "loss" in r]

    @property
    def heldout_losses(self) -> list[tuple[int, float]]:
        return [(r["step"], r["heldout_loss"]) for r in self.history if "heldout_loss" in r]


def make_optimizer(parameters, settings: TrainSettings, device: torch.device):
    """AdamW on CPU; on CUDA the default is bitsandbytes' *paged* AdamW, whose state can spill to CPU RAM under
    memory pressure instead of crashing with out-of-memory (the QLoRA paper's trick)."""
    name = settings.optimizer
    if name == "auto":
        name = "paged_adamw_32bit" if device.type == "cuda" else "adamw"
    if name.startswith("paged_") and device.type != "cuda":
        raise CourseError(f"{name} needs a CUDA GPU (bitsandbytes pages optimizer state with CUDA unified memory).",
                          'Use optimizer="adamw" (or "auto") on this machine.')
    if name == "sgd":  # plain gradient descent: the update is -lr x gradient (handy to compare gradients)
        return torch.optim.SGD(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay, foreach=False)
    common = dict(lr=settings.learning_rate, weight_decay=settings.weight_decay, betas=(0.9, 0.999))
    if name == "adamw":
        return torch.optim.AdamW(parameters, foreach=False, **common)
    import bitsandbytes as bnb

    if name == "paged_adamw_32bit":
        return bnb.optim.PagedAdamW32bit(parameters, **common)
    if name == "paged_adamw_8bit":
        return bnb.optim.PagedAdamW8bit(parameters, **common)
    raise CourseError(f"Unknown optimizer {name!r}.", 'Use "auto", "adamw", "sgd", "paged_adamw_32bit" or "paged_adamw_8bit".')


def _model_device(model) -> torch.device:
    return next(p.device for p in model.parameters())


def _sum_token_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over learned tokens, how many) - the caller chooses the normalisation."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def answer_loss(model, examples: Sequence[Example], pad_id: int = 0, batch_size: int = 16, accelerator=None) -> float:
    """Mean cross-entropy per answer token (nats) - exp() of it is the answers' perplexity. With an accelerator
    every process scores its share and the totals are summed (every process runs the same number of batches, as
    FSDP needs)."""
    was_training = model.training
    model.eval()
    device = _model_device(model) if accelerator is None else accelerator.device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = list(examples[rank::world])
    rounds = math.ceil(math.ceil(len(examples) / world) / batch_size)
    total, count = 0.0, 0
    for r in range(rounds):
        chunk = mine[r * batch_size:(r + 1) * batch_size]
        weight = 1.0 if chunk else 0.0
        batch = collate(chunk or [examples[0]], pad_id)
        loss, n = _sum_token_loss(model, {k: v.to(device) for k, v in batch.items()})
        total += weight * loss.item()
        count += int(weight) * n
    if accelerator is not None:
        sums = accelerator.reduce(torch.tensor([total, float(count)], device=device), reduction="sum")
        total, count = sums[0].item(), int(sums[1].item())
    if was_training:
        model.train()
    return total / max(count, 1)


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + micro * 101 + rank) % (2**63)


def _checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder counts only once its state.json is there)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if re.fullmatch(r"checkpoint-\d{6}", p.name) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _write_directory_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Write into a temporary sibling folder, then rename it into place (a rename is atomic on one file system)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; checkpoints and adapters are ordinary files
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _state_dict_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def _save_checkpoint(model, optimizer, folder: Path, state: dict, keep: int, accelerator=None) -> Path:
    """Adapter weights + optimizer state + progress, atomically. Works the same for one process, DDP and FSDP
    (torch's distributed state-dict API gathers full tensors on the first process)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = _state_dict_options(cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
    final = folder / _checkpoint_name(state["step"])
    if accelerator is None or accelerator.is_main_process:
        def write(staging: Path) -> None:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(staging / "adapter.safetensors"))
            torch.save(optimizer_state, staging / "optimizer.pt")
            (staging / "state.json").write_text(json.dumps(state, indent=1))  # last: marks the checkpoint complete

        _write_directory_atomically(final, write)
        for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return final


def _load_checkpoint(model, optimizer, checkpoint: Path, accelerator=None) -> dict:
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    distributed = accelerator is not None and accelerator.num_processes > 1
    main = accelerator is None or accelerator.is_main_process
    weights = load_file(str(checkpoint / "adapter.safetensors")) if main or not distributed else {}
    optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True) if main or not distributed else {}
    # strict=False: experts that no token has reached yet have no gradient and hence no optimizer state - then as now.
    options = _state_dict_options(strict=False, broadcast_from_rank0=distributed)
    result = set_model_state_dict(model, weights, options=options)
    if main and result.unexpected_keys:
        raise CourseError(f"{checkpoint} holds weights this model does not have: {result.unexpected_keys[:3]}",
                          "Resume with the same model and LoRA settings, or use a new checkpoint folder.")
    had_state = sorted(optimizer_state.get("state", {})) if main or not distributed else None
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
    _forget_states_the_checkpoint_lacked(model, optimizer, had_state, distributed)
    return json.loads((checkpoint / "state.json").read_text())


def _forget_states_the_checkpoint_lacked(model, optimizer, had_state: list[str] | None, distributed: bool) -> None:
    """torch's set_optimizer_state_dict first creates state for *every* parameter (a step with zero gradients). An
    expert that no token had reached before the checkpoint had no state; with one (Adam's step count 1) its first
    real update would differ from the uninterrupted run's. Remove those states again. (FSDP with flattened
    parameters is left as torch loads it: its state is per flat parameter, not per name.)"""
    if distributed:
        holder = [had_state]
        torch.distributed.broadcast_object_list(holder, src=0)
        had_state = holder[0]
    keep = set(had_state or [])
    named = list(model.named_parameters())
    if any("_flat_param" in name for name, _ in named):
        return
    for name, param in named:
        canonical = name.removeprefix("module.").replace("_orig_mod.", "")
        if param.requires_grad and canonical not in keep and param in optimizer.state:
            del optimizer.state[param]


def memory_snapshot(model=None, optimizer=None) -> dict:
    """Bytes in use now. CUDA: allocated and peak allocated. CPU: the process's resident memory (RSS). Plus the exact
    bytes of the model's parameters, of the trainable ones, of their gradients and of the optimizer state."""
    snapshot = {}
    if torch.cuda.is_available():
        snapshot["cuda_allocated"] = torch.cuda.memory_allocated()
        snapshot["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
    try:
        import psutil

        snapshot["process_rss"] = psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover - psutil is pinned
        pass
    if model is not None:
        params = list(model.parameters())
        snapshot["parameters"] = sum(p.numel() * p.element_size() for p in params)
        snapshot["trainable_parameters"] = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
        snapshot["gradients"] = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    if optimizer is not None:
        snapshot["optimizer_state"] = sum(v.numel() * v.element_size() for state in optimizer.state.values()
                                          for v in state.values() if torch.is_tensor(v))
    return snapshot


def train(
    model,
    train_examples: Sequence[Example],
    settings: TrainSettings,
    *,
    heldout: Sequence[Example] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    callbacks: Sequence[Callable[[dict, list[dict]], None]] = (),
    pad_id: int = 0,
    progress: bool = True,
    accelerator=None,
) -> TrainResult:
    """Train the model's trainable parameters (its LoRA adapters) on `train_examples`.

    * Loss: cross-entropy on answer tokens only, averaged over all answer tokens of the optimizer step (every
      micro-batch and process), so gradient accumulation and data parallelism give the same update as one big batch.
    * Checkpoints (adapter + optimizer + history) every `settings.save_every` steps, written atomically under
      `checkpoint_dir`. With `resume=True` an existing checkpoint there is picked up and training continues from it.
    * `stop_after=k` stops after k steps of this call, as if the run had been interrupted; so does Ctrl-C / the
      notebook's Interrupt button (the last completed step is checkpointed first).
    * `callbacks` receive (record, history) after every step - e.g. a LossCurve.
    * `accelerator`: an `accelerate.Accelerator` (scripts/train_lora.py): the model is prepared (DDP/FSDP), each
      process trains on its slice of every global batch, only the main process writes checkpoints.
    """
    if not train_examples:
        raise CourseError("No training examples.", "Load and encode a data set first (encode_dataset).")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else _model_device(model)
    if not any(p.requires_grad for p in model.parameters()):
        raise CourseError("The model has no trainable parameters.", "Wrap it with apply_lora() first.")
    if accelerator is not None:
        model = accelerator.prepare(model)  # first the model (FSDP replaces its parameters), then the optimizer
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, settings, device)
    if accelerator is not None:
        optimizer = accelerator.prepare(optimizer)

    history: list[dict] = []
    start_step, resumed_from = 0, None
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    existing = list_checkpoints(folder) if folder is not None and resume else []
    if existing:
        state = json.loads((existing[-1] / "state.json").read_text())
        if state.get("schedule") != settings.schedule() or state.get("world_size") != world:
            raise CourseError(
                f"The checkpoint in {existing[-1]} was made with different settings "
                f"({state.get('schedule')}, {state.get('world_size')} process(es)).",
                "Resume with exactly the same TrainSettings and number of processes, or pass resume=False / a new "
                "checkpoint_dir to start over.")
        _load_checkpoint(model, optimizer, existing[-1], accelerator)
        start_step, resumed_from, history = state["step"], state["step"], state["history"]

    per_step = settings.batch_size * world
    is_main = accelerator is None or accelerator.is_main_process
    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, initial=start_step, desc="LoRA training", unit="step")
    started = time.perf_counter()
    last_saved = start_step if resumed_from is not None else None
    step = start_step
    model.train()
    if step == 0 and heldout and settings.eval_every > 0:  # where the curve starts: the base model's held-out loss
        history.append({"step": 0, "heldout_loss": answer_loss(model, heldout, pad_id, accelerator=accelerator)})

    def checkpoint(current: int) -> Path | None:
        nonlocal last_saved
        if folder is None or last_saved == current:
            return None
        state = {"format": CHECKPOINT_FORMAT, "step": current, "schedule": settings.schedule(), "world_size": world,
                 "history": history}
        path = _save_checkpoint(model, optimizer, folder, state, settings.keep_checkpoints, accelerator)
        last_saved = current
        return path

    interrupted = False
    try:
        while step < settings.steps:
            if stop_after is not None and step - start_step >= stop_after:
                interrupted = True
                break
            step_started = time.perf_counter()
            lr = settings.learning_rate_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = []
            for micro in range(settings.grad_accum_steps):
                index = step * settings.grad_accum_steps + micro
                chosen = micro_batch_indices(len(train_examples), per_step, settings.seed, index)
                micro_batches.append([train_examples[i] for i in chosen])
            # Every process knows the whole step, so it can normalise by the step's total answer tokens itself.
            step_answer_tokens = sum(e.answer_tokens for mb in micro_batches for e in mb)
            step_tokens = sum(len(e.input_ids) for mb in micro_batches for e in mb)
            loss_sum = torch.zeros((), device=device)
            for micro, examples in enumerate(micro_batches):
                mine = examples[rank * settings.batch_size:(rank + 1) * settings.batch_size]
                batch = {k: v.to(device) for k, v in collate(mine, pad_id).items()}
                torch.manual_seed(_step_seed(settings.seed, step, micro, rank))  # dropout: same draws after a resume
                last = micro == settings.grad_accum_steps - 1
                sync = accelerator.no_sync(model) if accelerator is not None and not last else _null_context()
                with sync:
                    summed, _ = _sum_token_loss(model, batch)
                    # DDP averages gradients over processes: multiply by `world` so the result is sum / step tokens.
                    scaled = summed * world / step_answer_tokens
                    if accelerator is not None:
                        accelerator.backward(scaled)
                    else:
                        scaled.backward()
                loss_sum += summed.detach()
            if settings.max_grad_norm:
                if accelerator is not None:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                else:
                    torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if accelerator is not None:
                loss_sum = accelerator.reduce(loss_sum, reduction="sum")
            step += 1
            seconds = time.perf_counter() - step_started
            record = {"step": step, "loss": loss_sum.item() / step_answer_tokens, "lr": lr, "seconds": seconds,
                      "tokens": step_tokens, "answer_tokens": step_answer_tokens}
            if heldout and settings.eval_every > 0 and (step % settings.eval_every == 0 or step == settings.steps):
                record["heldout_loss"] = answer_loss(model, heldout, pad_id, accelerator=accelerator)
            history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", **({"heldout": f"{record['heldout_loss']:.3f}"}
                                                                 if "heldout_loss" in record else {}))
            for callback in callbacks if is_main else ():
                callback(record, history)
            if settings.save_every > 0 and (step % settings.save_every == 0 or step == settings.steps):
                checkpoint(step)
    except KeyboardInterrupt:
        if accelerator is not None and world > 1:
            raise
        interrupted = True
        optimizer.zero_grad(set_to_none=True)  # a half-accumulated step is dropped; it will be replayed exactly
    finally:
        if bar is not None:
            bar.close()
    saved = checkpoint(step) if step > 0 else None
    model.eval()
    last_checkpoint = list_checkpoints(folder)[-1] if folder is not None and list_checkpoints(folder) else saved
    return TrainResult(step, history, time.perf_counter() - started, interrupted, resumed_from, last_checkpoint,
                       memory=memory_snapshot(model, optimizer))


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def throughput(history: list[dict], skip_first: int = 1) -> dict:
    """Median seconds per optimizer step and tokens per second (prompt + answer tokens), warm-up steps skipped."""
    steps = [r for r in history if "seconds" in r][skip_first:] or [r for r in history if "seconds" in r]
    if not steps:
        return {"steps": 0}
    seconds = sorted(r["seconds"] for r in steps)
    median = seconds[len(seconds) // 2]
    total_time = sum(r["seconds"] for r in steps)
    return {"steps": len(steps), "median_step_seconds": median,
            "tokens_per_second": sum(r["tokens"] for r in steps) / total_time,
            "answer_tokens_per_second": sum(r["answer_tokens"] for r in steps) / total_time}


# ---------------------------------------------------------------------------------------------------- evaluation


def normalize_answer(text: str) -> list[str]:
    """Words of an answer for scoring: Unicode-normalised, lower case, punctuation and apostrophes as spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) and ch not in "+-" else ch for ch in text)
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of word precision and recall (SQuAD's answer F1): partial credit for partly right answers."""
    predicted, expected = normalize_answer(prediction), normalize_answer(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = 0
    remaining = list(expected)
    for word in predicted:
        if word in remaining:
            remaining.remove(word)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


@dataclass
class AnswerReport:
    """Greedy answers to held-out questions, scored against the references."""

    questions: list[str]
    answers: list[str]
    references: list[str]
    f1: float
    exact: float
    answer_loss: float | None = None

    def table(self, rows: int = 5) -> str:
        lines = []
        for q, a, r in list(zip(self.questions, self.answers, self.references))[:rows]:
            lines.append(f"Q: {q}\n   model:     {a!r}\n   reference: {r!r}  (F1 {token_f1(a, r):.2f})")
        return "\n".join(lines)


def evaluate_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 48,
                     batch_size: int = 32, examples: Sequence[Example] | None = None) -> AnswerReport:
    """Answer the last user turn of each conversation greedily; score against its reference answer (token F1 and
    exact match); with `examples` also the answer loss (teacher-forced)."""
    from .chat import SamplingSettings, generate_batch

    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    prompts = [c[:-1] for c in conversations]
    answers = []
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), batch_size):
        answers += [done.text.strip() for done in generate_batch(model, tokenizer, prompts[start:start + batch_size], settings)]
    if was_training:
        model.train()
    references = [c[-1]["content"] for c in conversations]
    f1 = sum(token_f1(a, r) for a, r in zip(answers, references)) / len(references)
    exact = sum(exact_match(a, r) for a, r in zip(answers, references)) / len(references)
    loss = answer_loss(model, examples, tokenizer.pad_token_id or 0) if examples is not None else None
    return AnswerReport([c[-2]["content"] for c in conversations], answers, references, f1, exact, loss)


# ------------------------------------------------------------------------------------------------------- plans

GPU_KINDS: dict[str, float] = {  # memory per GPU, as sold (decimal GB, like memory.py's planner)
    "A100 40GB": 40 * GB,
    "A100 / H100 80GB": 80 * GB,
    "H200 141GB": 141 * GB,
}  # (AMD MI300X: 192 GB, but bitsandbytes' 4-bit kernels on ROCm are not verified by the course)
USABLE_FRACTION = 0.9  # the rest: CUDA context, allocator fragmentation, NCCL buffers


@dataclass(frozen=True)
class LoraPlan:
    """Memory for LoRA / QLoRA training of one model, from its config (exact counts; activations estimated)."""

    model_name: str
    precision: str  # of the frozen base weights
    num_layers: int
    lora_params: int
    lora_params_by_part: dict
    base_weight_bytes: float
    adapter_bytes: float  # LoRA weights, fp32
    gradient_bytes: float  # their gradients, fp32
    optimizer_bytes: float  # AdamW's two moments, fp32
    activation_bytes: float  # estimate for batch_size x seq_len
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool

    @property
    def training_state_bytes(self) -> float:
        return self.adapter_bytes + self.gradient_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> float:
        return self.base_weight_bytes + self.training_state_bytes + self.activation_bytes

    def per_gpu_bytes(self, gpus: int, strategy: str = "fsdp") -> float:
        """Peak bytes on each GPU. "fsdp": weights, adapters and optimizer sharded over the GPUs (FSDP / ZeRO-3),
        each GPU holding its own micro-batch's activations plus two gathered layers. "device_map": one process,
        layers spread over the GPUs (they take turns); activations counted on every GPU (conservative)."""
        sharded = (self.base_weight_bytes + self.training_state_bytes) / gpus
        if strategy == "fsdp":
            gathered = 2 * self.base_weight_bytes / self.num_layers if gpus > 1 else 0.0
            return sharded + self.activation_bytes + gathered
        if strategy == "device_map":
            return sharded + self.activation_bytes
        raise ValueError(f"strategy must be 'fsdp' or 'device_map', not {strategy!r}")

    def gpu_options(self, kinds: dict[str, float] = GPU_KINDS, counts: Sequence[int] = (1, 2, 4, 8),
                    strategy: str = "fsdp") -> list[dict]:
        rows = []
        for kind, memory in kinds.items():
            for n in counts:
                need = self.per_gpu_bytes(n, strategy)
                rows.append({"gpus": f"{n} x {kind}", "count": n, "per_gpu_GB": round(need / GB, 1),
                             "fits": need <= USABLE_FRACTION * memory})
        return rows

    def smallest_sets(self, strategy: str = "fsdp") -> list[str]:
        """For each GPU kind, the fewest GPUs (1, 2, 4 or 8) that fit - the sets worth renting."""
        best = {}
        for row in self.gpu_options(strategy=strategy):
            kind = row["gpus"].split(" x ", 1)[1]
            if row["fits"] and kind not in best:
                best[kind] = row["gpus"]
        return list(best.values())


def _activation_bytes(config, batch: int, seq: int, checkpointing: bool, bytes_per_value: int = 2) -> float:
    """A rough estimate of activation memory for one training step (+-50%: kernels and allocators differ).

    Per layer: about 12 hidden-size vectors per token (norms, residuals, q/k/v/o), 4 values per dense-MLP and per
    chosen-expert intermediate unit (gate, up, activation, product), and the fp32 attention scores, probabilities
    and their soft-capped copy (3 x heads x seq^2; Grok 2 cannot use fused attention). Plus the fp32 logits and
    their gradient. With gradient checkpointing only each layer's input is kept, one layer is recomputed at a time.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    h, layers, heads = text.hidden_size, text.num_hidden_layers, text.num_attention_heads
    dense = getattr(text, "intermediate_size", 0) if getattr(text, "residual_moe", True) else 0
    experts = (getattr(text, "moe_intermediate_size", 0) or 0) * (getattr(text, "num_experts_per_tok", 0) or 0)
    per_layer = bytes_per_value * batch * seq * (12 * h + 4 * dense + 4 * experts) + 3 * 4 * batch * heads * seq * seq
    logits = 2 * 4 * batch * seq * text.vocab_size
    if checkpointing:
        return layers * bytes_per_value * batch * seq * h + per_layer + logits
    return layers * per_layer + logits


def plan_lora(config, settings: LoraSettings = LoraSettings(), *, precision: str = "nf4", batch_size: int = 1,
              seq_len: int = 1024, gradient_checkpointing: bool = True, name: str | None = None) -> LoraPlan:
    """Memory plan for LoRA training from a config alone: builds the model on the meta device (no memory), counts
    the adapter parameters exactly (rank x (in + out) per adapted matrix), adds AdamW state and estimates
    activations. precision: "nf4" for QLoRA, "bf16"/"fp16" for LoRA on a 16-bit base, "fp32" on CPU."""
    from .memory import _build_on_meta, plan_memory

    plan = plan_memory(config, name=name)
    meta = _build_on_meta(config)
    by_part = {part: 0 for part in settings.parts}
    for part, names in find_lora_targets(meta, settings).items():
        for module_name in names:
            module = meta.get_submodule(module_name)
            by_part[part] += settings.rank * (module.in_features + module.out_features)
    lora = sum(by_part.values())
    return LoraPlan(
        model_name=plan.model_name, precision=precision, num_layers=plan.num_layers, lora_params=lora,
        lora_params_by_part=by_part, base_weight_bytes=plan.weight_bytes(precision), adapter_bytes=4.0 * lora,
        gradient_bytes=4.0 * lora, optimizer_bytes=8.0 * lora,
        activation_bytes=_activation_bytes(config, batch_size, seq_len, gradient_checkpointing,
                                           4 if precision == "fp32" else 2),
        batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=gradient_checkpointing)


def launch_command(gpus: int, model: str, *, strategy: str = "fsdp", quantization: str | None = "nf4",
                   settings: LoraSettings = LoraSettings(rank=16, alpha=32), extra: str = "") -> str:
    """The command that runs scripts/train_lora.py on `gpus` GPUs of one node."""
    args = (f"scripts/train_lora.py --model {model} --rank {settings.rank} --alpha {settings.alpha:g} "
            f"--parts {','.join(settings.parts)}" + (f" --quantization {quantization}" if quantization else "")
            + " --gradient-checkpointing" + (f" {extra}" if extra else ""))
    if strategy == "device_map":
        return f"python {args} --device-map auto"
    config = "configs/accelerate/fsdp_qlora.yaml" if quantization else "configs/accelerate/fsdp.yaml"
    if strategy == "ddp":
        config = "configs/accelerate/ddp.yaml"
    return f"accelerate launch --config_file {config} --num_processes {gpus} {args}"


# ---------------------------------------------------------------------------------------------------- plotting


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class LossCurve:
    """Training and held-out loss, redrawn in place while training runs.

    In Jupyter the figure is shown once with a display id and updated through that handle (so it also works when
    the notebook is executed headless, e.g. by nbval); elsewhere nothing is drawn until `save(path)`.
    Redraws are throttled to one every `min_interval` seconds; the last one always happens (`finish`).
    """

    def __init__(self, total_steps: int, title: str = "LoRA fine-tuning", min_interval: float = 1.0,
                 marks: dict[int, str] | None = None):
        import matplotlib.pyplot as plt

        self.total_steps = total_steps
        self.marks = dict(marks or {})  # {step: label}: dashed vertical lines (e.g. where a run was resumed)
        self.title = title
        self.min_interval = min_interval
        self._last_draw = 0.0
        self.fig, self.ax = plt.subplots(figsize=(7, 3.4))
        self.handle = None
        if _in_notebook():
            from IPython.display import display

            self.handle = display(self.fig, display_id=True)
        plt.close(self.fig)  # shown through the handle only, not a second time at the end of the cell
        self.draws = 0

    def __call__(self, record: dict, history: list[dict]) -> None:
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval or record.get("step") == self.total_steps:
            self.draw(history)
            self._last_draw = now

    def draw(self, history: list[dict]) -> None:
        ax = self.ax
        ax.clear()
        train = [(r["step"], r["loss"]) for r in history if "loss" in r]
        held = [(r["step"], r["heldout_loss"]) for r in history if "heldout_loss" in r]
        if train:
            ax.plot(*zip(*train), label="train (answer tokens)", color="tab:blue", alpha=0.8)
        if held:
            ax.plot(*zip(*held), "o-", label="held-out (answer tokens)", color="tab:orange")
        for step, label in self.marks.items():
            ax.axvline(step, color="grey", linestyle="--", linewidth=1)
            ax.annotate(label, (step, 1), xycoords=("data", "axes fraction"), xytext=(4, -12),
                        textcoords="offset points", fontsize=8, color="grey")
        ax.set_xlim(0, self.total_steps)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy (nats / token)")
        ax.set_title(self.title)
        ax.grid(alpha=0.3)
        if train or held:
            ax.legend(loc="upper right")
        self.fig.tight_layout()
        self.draws += 1
        if self.handle is not None:
            self.handle.update(self.fig)

    def finish(self, history: list[dict]) -> None:
        self.draw(history)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(path, dpi=100)
        return path


def describe_memory(snapshot: dict) -> str:
    """One line per entry of a memory_snapshot, human units."""
    return "\n".join(f"  {key:22s} {format_bytes(value)}" for key, value in snapshot.items())


__all__ = [
    "LORA_TARGET_PARTS", "DEFAULT_PARTS", "DataError", "validate_chat_rows", "load_chat_jsonl", "check_heldout_is_new",
    "Example", "encode_conversation", "encode_dataset", "collate", "micro_batch_indices", "LoraSettings",
    "find_lora_targets", "lora_config", "keep_4bit_differentiable", "apply_lora", "count_parameters", "save_adapter", "load_adapter",
    "max_logit_difference", "TrainSettings", "TrainResult", "make_optimizer", "answer_loss", "list_checkpoints",
    "memory_snapshot", "train", "throughput", "normalize_answer", "token_f1", "exact_match", "AnswerReport",
    "evaluate_answers", "GPU_KINDS", "LoraPlan", "plan_lora", "launch_command", "LossCurve", "describe_memory",
]
