"""The training loop: answer-token loss, gradient accumulation, warm-up and cosine schedule, checkpoints that resume
exactly, one process or many (accelerate), and what a run cost in time and memory.

    result = train(model, examples, TrainSettings(steps=60, batch_size=8), heldout=heldout_examples,
                   checkpoint_dir=workspace_dir() / "lora-checkpoints" / "faq-fr")

Determinism: the batch of every step is a pure function of (seed, step), and the random state (LoRA dropout) is
re-seeded from (seed, step, micro-batch, rank) before every forward pass. A run resumed from a checkpoint therefore
replays exactly what the uninterrupted run would have done: on CPU the final weights are bit-for-bit identical.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..batches import collate
from ..errors import CourseError
from ..evaluation import answer_loss, summed_label_loss
from ..units import format_bytes
from .checkpoints import CHECKPOINT_FORMAT, load_checkpoint, recover_checkpoints, resume_point, save_checkpoint
from .data import Example, micro_batch_indices


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
        """The profile's steps, batch, accumulation and learning rate; keywords override them."""
        from ..profiles import get_profile

        sizes = (profile if hasattr(profile, "sizes") else get_profile(profile)).sizes
        values = dict(steps=sizes.train_steps, batch_size=sizes.train_batch_size, grad_accum_steps=sizes.grad_accum_steps,
                      learning_rate=sizes.learning_rate)
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
    checkpoint: Path | None  # the newest checkpoint of this run (None without a checkpoint_dir)
    memory: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was recovered from an earlier interrupted write

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


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + micro * 101 + rank) % (2**63)


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


def describe_memory(snapshot: dict, before: dict | None = None) -> str:
    """One line per entry of a memory_snapshot, in human units; with `before`, the earlier figure beside each."""
    if before is None:
        return "\n".join(f"  {key:22s} {format_bytes(value)}" for key, value in snapshot.items())
    return "\n".join(f"  {key:22s} before {format_bytes(before.get(key, 0)):>24s}   after {format_bytes(value)}"
                     for key, value in snapshot.items())


def _start_or_resume(model, optimizer, folder: Path | None, settings: TrainSettings, world: int, resume: bool,
                     accelerator) -> tuple[Path | None, dict | None, list[str]]:
    """Clean what an interrupted save left, refuse to mix two runs, and load the checkpoint to continue from."""
    main = accelerator is None or accelerator.is_main_process
    notes = recover_checkpoints(folder) if folder is not None and main else []
    if accelerator is not None:
        accelerator.wait_for_everyone()
    for note in notes:
        print(f"train: {note}")
    checkpoint, state = resume_point(folder, settings.schedule(), world, resume)  # every process: all refuse together
    if checkpoint is not None:
        load_checkpoint(model, optimizer, checkpoint, accelerator)
    return checkpoint, state, notes


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
      `checkpoint_dir`, one run per folder. `resume=True` continues the run found there (same settings, or refused);
      `resume=False` starts a new one and refuses a folder holding an earlier run (see `set_aside_run`).
    * `stop_after=k` stops after k steps of this call, as if the run had been interrupted; so does Ctrl-C / the
      notebook's Interrupt button (the last completed step is checkpointed first).
    * `callbacks` receive (record, history) after every step - e.g. a helpers.widgets.LossCurve.
    * `accelerator`: an `accelerate.Accelerator` (scripts/train_lora.py): the model is prepared (DDP/FSDP), each
      process trains on its slice of every global batch, only the main process writes checkpoints.
    """
    if not train_examples:
        raise CourseError("No training examples.", "Load and encode a data set first (encode_dataset).")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else _model_device(model)
    if not any(p.requires_grad for p in model.parameters()):
        raise CourseError("The model has no trainable parameters.", "Wrap it with apply_lora() first.")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resume_point(folder, settings.schedule(), world, resume)  # refuse before any work (again below, after cleaning)
    if accelerator is not None:
        model = accelerator.prepare(model)  # first the model (FSDP replaces its parameters), then the optimizer
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, settings, device)
    if accelerator is not None:
        optimizer = accelerator.prepare(optimizer)

    latest, state, notes = _start_or_resume(model, optimizer, folder, settings, world, resume, accelerator)
    start_step, resumed_from, history = (state["step"], state["step"], state["history"]) if state else (0, None, [])

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

    def checkpoint(current: int) -> None:
        nonlocal last_saved, latest
        if folder is None or last_saved == current:
            return
        state = {"format": CHECKPOINT_FORMAT, "step": current, "schedule": settings.schedule(), "world_size": world,
                 "history": history}
        latest, cleaned = save_checkpoint(model, optimizer, folder, state, settings.keep_checkpoints, accelerator)
        for note in cleaned:
            print(f"train: {note}")
        notes.extend(cleaned)
        last_saved = current

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
                sync = accelerator.no_sync(model) if accelerator is not None and not last else contextlib.nullcontext()
                with sync:
                    summed, _ = summed_label_loss(model, batch)
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
    if step > 0:
        checkpoint(step)
    model.eval()
    return TrainResult(step, history, time.perf_counter() - started, interrupted, resumed_from, latest,
                       memory=memory_snapshot(model, optimizer), notes=notes)


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


__all__ = ["TrainSettings", "TrainResult", "make_optimizer", "memory_snapshot", "describe_memory", "train",
           "throughput"]
