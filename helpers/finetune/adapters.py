"""LoRA adapters on Grok 2: which modules get one (attention, dense MLP, experts; never the router), wrapping a model
with PEFT (QLoRA on a 4-bit base included), and saving / loading the adapter without ever deleting a file the course
did not write.

    lora = LoraSettings(rank=16, alpha=32, dropout=0.0)
    model = apply_lora(base, lora, seed=0)
    save_adapter(model, workspace_dir() / "adapters" / "faq-fr")   # atomic; refuses a folder holding other files
    again = load_adapter(fresh_base, workspace_dir() / "adapters" / "faq-fr")
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CourseError
from ..model_parts import is_router, is_router_parameter
from .folders import recover_interrupted_writes, write_directory_atomically

# Grok 2's linear layers by part (names as in the released checkpoint). PEFT matches a target against the end of a
# module's name, so "w1" finds every `block_sparse_moe.experts.E.w1` and "gate_proj" the dense MLP's - while the
# router, `block_sparse_moe.gate`, matches none of them and stays frozen.
LORA_TARGET_PARTS: dict[str, tuple[str, ...]] = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "dense_mlp": ("gate_proj", "up_proj", "down_proj"),
    "experts": ("w1", "w2", "w3"),
}
DEFAULT_PARTS = ("attention", "dense_mlp", "experts")
# save_adapter writes this beside PEFT's files: the list of what it wrote. A later save into the same folder replaces
# exactly those files and refuses a folder holding anything else.
ADAPTER_RECORD = "course_adapter.json"
MAX_RECORD_BYTES = 64 * 1024


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
        """The profile's rank (alpha = 2 x rank) and dropout; keywords override them."""
        from ..profiles import get_profile

        sizes = (profile if hasattr(profile, "sizes") else get_profile(profile)).sizes
        values = dict(rank=sizes.lora_rank, alpha=2.0 * sizes.lora_rank, dropout=sizes.lora_dropout)
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
    with _quiet_peft():
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


class _DropOptionalKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "from kernels-community" not in record.getMessage()


@contextlib.contextmanager
def _quiet_peft():
    """Two messages that PEFT's first use prints and a learner can do nothing about, dropped here and only here:

    - peft 0.21.2's PeftModel reads `model.is_gradient_checkpointing`, which transformers 5.23 renamed to
      `is_activation_checkpointing`; the old name still answers (the same value), with a FutureWarning.
    - importing peft imports bitsandbytes, which on a CPU with AVX512-BF16 looks for an optional faster *inference*
      kernel on the Hub (the `kernels` package, not installed) and logs "Failed to load CPU gemm_4bit_forward from
      kernels-community". Its built-in CPU kernels are used instead; training must not use that inference kernel
      anyway (see keep_4bit_differentiable).
    Every other warning and log line still shows."""
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    quiet = _DropOptionalKernelNotice()
    logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        logger.removeFilter(quiet)


def _wrap_with_peft(model, config, sharded: bool):
    with _quiet_peft():
        from peft import get_peft_model

        return get_peft_model(model, config, autocast_adapter_dtype=not sharded)


def apply_lora(model, settings: LoraSettings = LoraSettings(), *, seed: int = 0, gradient_checkpointing: bool = False,
               sharded: bool = False):
    """Wrap `model` with fresh LoRA adapters (PEFT). Everything else is frozen - the router included.

    On a 4-bit model (QLoRA) the parameters left unquantized (norms, embeddings, LM head) are cast to fp32 first
    (`prepare_model_for_kbit_training`) for numerically stable training. `sharded=True` (FSDP / ZeRO-3 QLoRA, as in
    scripts/train_lora.py): skip that cast and keep the adapters in the base's 16-bit dtype - FSDP needs one dtype
    per shard unit (what TRL and PEFT's FSDP-QLoRA recipe do). `gradient_checkpointing`: recompute each layer's
    activations in the backward pass instead of keeping them (less memory, about a third more compute).
    """
    with _quiet_peft():
        from peft import prepare_model_for_kbit_training

    config = lora_config(model, settings)
    if is_quantized(model):
        keep_4bit_differentiable(model)
    if is_quantized(model) and not sharded:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        # Non-reentrant checkpointing: gradients reach the adapters without the inputs needing requires_grad.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)  # A is initialised at random (B at zero: training starts exactly at the base model)
    peft_model = _wrap_with_peft(model, config, sharded)
    trainable_router = [n for n, p in peft_model.named_parameters() if p.requires_grad and is_router_parameter(n)]
    if trainable_router:
        raise CourseError(f"Router parameters are trainable: {trainable_router[:3]}", "Do not target the router.")
    return peft_model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights are counted as the numbers they stand for, not packed bytes."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _written_by_save_adapter(directory: Path) -> set[str] | None:
    """The files save_adapter recorded writing in `directory` (with the record itself), or None without a record."""
    record = directory / ADAPTER_RECORD
    if not record.is_file() or record.stat().st_size > MAX_RECORD_BYTES:
        return None
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError, OSError):
        return None
    if not isinstance(files, list):
        return None
    return {name for name in files if isinstance(name, str)} | {ADAPTER_RECORD}


def check_adapter_destination(directory: str | Path) -> Path:
    """Raise CourseError unless save_adapter may write `directory`: it is new, empty, or holds only what an earlier
    save_adapter wrote there. Cheap; `scripts/train_lora.py` calls it before training, not after."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CourseError(f"{directory} is a file, not a folder.", "Give save_adapter a folder path (new or empty).")
    if not directory.is_dir():
        return directory
    present = sorted(p.name for p in directory.iterdir())
    if not present:
        return directory
    written = _written_by_save_adapter(directory)
    foreign = [name for name in present if written is None or name not in written]
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise CourseError(
            f"{directory} holds files that save_adapter did not write ({shown}); saving there would delete them.",
            f"Save into a new folder, e.g. {directory / 'adapter'} or a new name beside it; or move those files out "
            f"first. (save_adapter replaces a folder only when its {ADAPTER_RECORD} lists every file in it.)")
    return directory


def _save_files(peft_model, state, staging: Path) -> None:
    peft_model.save_pretrained(staging, state_dict=state, safe_serialization=True)
    written = sorted(p.name for p in staging.iterdir())
    record = {"written_by": "helpers.finetune.save_adapter", "files": written}
    (staging / ADAPTER_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def save_adapter(model, directory: str | Path, accelerator=None) -> dict:
    """Save only the adapter (PEFT's adapter_model.safetensors + adapter_config.json, and a record of what was
    written), atomically: into a temporary folder beside `directory`, then renamed into place. Never deletes a file it
    did not write: a folder holding anything else is refused (see `check_adapter_destination`). What an interrupted
    earlier save left behind is finished or cleaned first, and said. With an accelerator (DDP/FSDP) every process
    must call it; the full adapter is gathered on the first process, which writes it."""
    directory = Path(directory)
    main = accelerator is None or accelerator.is_main_process
    notes = recover_interrupted_writes(directory.parent, directory.name) if main else []
    if accelerator is not None:
        accelerator.wait_for_everyone()
    check_adapter_destination(directory)  # on every process: all refuse together, none waits in a collective
    if accelerator is None:
        peft_model, state = getattr(model, "module", model), None
    else:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        from .checkpoints import state_dict_options

        state = get_model_state_dict(model, options=state_dict_options(cpu_offload=True, ignore_frozen_params=True))
        peft_model = accelerator.unwrap_model(model)
    if main:
        notes += write_directory_atomically(directory, lambda staging: _save_files(peft_model, state, staging))
        for note in notes:
            print(f"save_adapter: {note}")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    return {"path": str(directory), "files": files, "bytes": sum(files.values()), "recovered": notes}


def load_adapter(base_model, directory: str | Path, trainable: bool = False):
    """`base_model` + the adapter saved in `directory` (PEFT `PeftModel.from_pretrained`). An adapter whose save was
    interrupted between two renames is put back in place first (and said)."""
    directory = Path(directory)
    if not (directory / "adapter_config.json").exists():
        for note in recover_interrupted_writes(directory.parent, directory.name):
            print(f"load_adapter: {note}")
    if not (directory / "adapter_config.json").exists():
        raise CourseError(f"No adapter_config.json in {directory}.", "Pass the folder save_adapter() wrote.")
    with _quiet_peft():
        from peft import PeftModel

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


__all__ = ["LORA_TARGET_PARTS", "DEFAULT_PARTS", "ADAPTER_RECORD", "LoraSettings", "find_lora_targets", "lora_config",
           "is_quantized", "keep_4bit_differentiable", "apply_lora", "count_parameters", "check_adapter_destination",
           "save_adapter", "load_adapter", "max_logit_difference"]
