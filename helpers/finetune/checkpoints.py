"""Training checkpoints: one folder per saved step (adapter weights, optimizer state, progress), written atomically,
read back for an exact resume, and one run per checkpoint folder - never two runs mixed in one.

    checkpoint_dir/
        checkpoint-000020/   adapter.safetensors  optimizer.pt  state.json   (state.json last: marks it complete)
        checkpoint-000040/

`train(resume=True)` continues the run found there (same settings, or refused). `train(resume=False)` starts a new
run, and refuses a folder that already holds one: pass another folder, or `set_aside_run(folder)` first, which
renames the earlier run beside it (nothing is deleted). Half-written checkpoints left by a kill are removed on the
next call, and said.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..errors import CourseError
from ..units import MiB
from .folders import recover_interrupted_writes, set_aside, write_directory_atomically

CHECKPOINT_FORMAT = 1
_CHECKPOINT = re.compile(r"checkpoint-\d{6}")
MAX_STATE_BYTES = 64 * MiB  # state.json: settings and the loss history (about 150 bytes per step)


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def is_checkpoint_name(name: str) -> bool:
    return bool(_CHECKPOINT.fullmatch(name))


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder counts only once its state.json is there)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if is_checkpoint_name(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def read_state(checkpoint: Path) -> dict:
    path = checkpoint / "state.json"
    if path.stat().st_size > MAX_STATE_BYTES:
        raise CourseError(f"{path} is larger than any checkpoint state the course writes.",
                          "Point checkpoint_dir at a folder of course checkpoints, or at a new folder.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CourseError(f"{path} is damaged ({error}).",
                          f"Use another checkpoint_dir, or set_aside_run({checkpoint.parent}) to keep it apart.") from None


def recover_checkpoints(checkpoint_dir: str | Path) -> list[str]:
    """Finish or clean the checkpoint writes a kill interrupted in `checkpoint_dir` (see helpers.finetune.folders)."""
    return recover_interrupted_writes(checkpoint_dir, is_checkpoint_name)


def set_aside_run(checkpoint_dir: str | Path) -> Path | None:
    """Rename the run in `checkpoint_dir` to `NAME.earlier-N` beside it so that a new run can start there; returns the
    new name (None when there was no run to set aside). Nothing is deleted."""
    folder = Path(checkpoint_dir)
    if not list_checkpoints(folder):
        return None
    return set_aside(folder)


def resume_point(checkpoint_dir: Path | None, schedule: dict, world: int, resume: bool,
                 choices: str | None = None) -> tuple[Path | None, dict | None]:
    """(checkpoint, its state) to continue from, (None, None) for a fresh start; refuses mixing two runs.

    `choices` replaces the sentence that names what to do instead (scripts word it as command-line options)."""
    existing = list_checkpoints(checkpoint_dir) if checkpoint_dir is not None else []
    if not existing:
        return None, None
    last = existing[-1]
    state = read_state(last)
    if not resume:
        raise CourseError(
            f"{checkpoint_dir} already holds the checkpoints of an earlier run (up to step {state.get('step')}: "
            f"{', '.join(p.name for p in existing)}); a new run there would mix the two.",
            choices or f"Continue that run with resume=True (the same settings), or start the new one elsewhere: "
                       f"another checkpoint_dir, or finetune.set_aside_run({str(checkpoint_dir)!r}) first, which "
                       f"renames the earlier run to {Path(checkpoint_dir).name}.earlier-N (nothing is deleted).")
    if state.get("schedule") != schedule or state.get("world_size") != world:
        raise CourseError(
            f"The checkpoint in {last} was made with different settings "
            f"({state.get('schedule')}, {state.get('world_size')} process(es)).",
            choices or "Resume with exactly the same TrainSettings and number of processes, or start over in another "
                       f"checkpoint_dir (or finetune.set_aside_run({str(checkpoint_dir)!r}) first: nothing is deleted).")
    return last, state


def state_dict_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def save_checkpoint(model, optimizer, folder: Path, state: dict, keep: int, accelerator=None) -> tuple[Path, list[str]]:
    """Adapter weights + optimizer state + progress, atomically; keeps the newest `keep`. Works the same for one
    process, DDP and FSDP (torch's distributed state-dict API gathers full tensors on the first process). Returns the
    checkpoint and the notes of any interrupted earlier write it cleaned up first."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = state_dict_options(cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
    final = folder / checkpoint_name(state["step"])
    notes: list[str] = []
    if accelerator is None or accelerator.is_main_process:
        def write(staging: Path) -> None:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(staging / "adapter.safetensors"))
            torch.save(optimizer_state, staging / "optimizer.pt")
            (staging / "state.json").write_text(json.dumps(state, indent=1))  # last: marks the checkpoint complete

        notes = write_directory_atomically(final, write)
        for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)  # this run's own older checkpoints (one run per folder)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return final, notes


def load_checkpoint(model, optimizer, checkpoint: Path, accelerator=None) -> dict:
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    distributed = accelerator is not None and accelerator.num_processes > 1
    main = accelerator is None or accelerator.is_main_process
    weights = load_file(str(checkpoint / "adapter.safetensors")) if main or not distributed else {}
    optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True) if main or not distributed else {}
    # strict=False: experts that no token has reached yet have no gradient and hence no optimizer state - then as now.
    options = state_dict_options(strict=False, broadcast_from_rank0=distributed)
    result = set_model_state_dict(model, weights, options=options)
    if main and result.unexpected_keys:
        raise CourseError(f"{checkpoint} holds weights this model does not have: {result.unexpected_keys[:3]}",
                          "Resume with the same model and LoRA settings, or use a new checkpoint folder.")
    had_state = sorted(optimizer_state.get("state", {})) if main or not distributed else None
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
    _forget_states_the_checkpoint_lacked(model, optimizer, had_state, distributed)
    return read_state(checkpoint)


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


__all__ = ["CHECKPOINT_FORMAT", "checkpoint_name", "is_checkpoint_name", "list_checkpoints", "read_state",
           "recover_checkpoints", "set_aside_run", "resume_point", "save_checkpoint", "load_checkpoint"]
