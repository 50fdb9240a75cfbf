"""LoRA / QLoRA fine-tuning of Grok 2 (or the profile's model) from the command line - one process or many.

Lesson 05 runs the same loop (`helpers.finetune.train`) inside the notebook; this script is what you launch on a GPU
node. Every process loads the model, wraps it with LoRA, and trains on its slice of each global batch; the first
process writes checkpoints (atomically) and the adapter. Rerunning the same command resumes from the last checkpoint.

    # one process (CPU, one GPU, or several GPUs taking turns with --device-map auto)
    python scripts/train_lora.py --steps 200

    # data parallel (DDP) on 8 GPUs; FSDP shards a model too big for one GPU; FSDP + 4-bit = QLoRA on a node
    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 scripts/train_lora.py ...
    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 8 scripts/train_lora.py ...
    accelerate launch --config_file configs/accelerate/fsdp_qlora.yaml --num_processes 8 scripts/train_lora.py \
        --quantization nf4 --gradient-checkpointing ...

    # the CI rehearsal: 2 CPU processes talking over gloo (accelerate's torchrun launcher + --cpu)
    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 scripts/train_lora.py --cpu ...

Nothing is deleted: --output must be a new or empty folder, or one this script (save_adapter) wrote before; and a
checkpoint folder holds one run - with --no-resume, a folder holding an earlier run is refused (--set-aside renames
that run beside it first). Both are checked before the model is loaded.

Grok 2.5's released files are pre-sharded for 8-way tensor parallelism; convert them once to ordinary shards before
quantized training: `helpers.grok2.convert_released_checkpoint(src, dst)`, then `--model dst`.
Licence: fine-tuning Grok 2 itself is allowed; using Grok 2 or its outputs to train other models is not.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

import helpers
from helpers import finetune
from helpers.paths import DATA_DIR
from helpers.profiles import resolve_source
from helpers.quantization import quantization_config

DATA = DATA_DIR / "finetune"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_argument_group("model and data")
    where.add_argument("--profile", default=None, help="course profile for defaults (tiny | small | grok-2)")
    where.add_argument("--model", default=None, help="folder or hub id (default: the profile's model)")
    where.add_argument("--tokenizer", default=None, help="default: the model's (the profile's tokenizer for its model)")
    where.add_argument("--train", type=Path, default=DATA / "faq_fr_train.jsonl")
    where.add_argument("--heldout", type=Path, default=DATA / "faq_fr_heldout.jsonl")
    where.add_argument("--output", type=Path, default=None,
                       help="adapter folder: new, empty, or an earlier adapter of this script (default: "
                            "workspace/adapters/<run>)")
    where.add_argument("--checkpoint-dir", type=Path, default=None, help="default: workspace/lora-checkpoints/<run>")
    where.add_argument("--run-name", default=None, help="names the default output folders (default: faq-fr-<profile>)")
    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--rank", type=int, default=None, help="default: the profile's sizes.lora_rank")
    lora.add_argument("--alpha", type=float, default=None, help="default: 2 x rank")
    lora.add_argument("--dropout", type=float, default=None, help="default: the profile's sizes.lora_dropout")
    lora.add_argument("--parts", default=",".join(finetune.DEFAULT_PARTS),
                      help=f"comma-separated subset of {','.join(finetune.LORA_TARGET_PARTS)}")
    opt = parser.add_argument_group("training")
    opt.add_argument("--steps", type=int, default=None, help="default: the profile's sizes.train_steps")
    opt.add_argument("--batch-size", type=int, default=None, help="per process; default: sizes.train_batch_size")
    opt.add_argument("--grad-accum", type=int, default=None, help="default: sizes.grad_accum_steps")
    opt.add_argument("--lr", type=float, default=None, help="peak learning rate (default: sizes.learning_rate)")
    opt.add_argument("--warmup", type=int, default=5)
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--max-seq-len", type=int, default=None, help="default: sizes.max_seq_len")
    opt.add_argument("--optimizer", default="auto", help="auto | adamw | paged_adamw_32bit | paged_adamw_8bit")
    opt.add_argument("--eval-every", type=int, default=20)
    opt.add_argument("--save-every", type=int, default=20)
    opt.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations: less memory")
    opt.add_argument("--no-resume", action="store_true",
                     help="start a new run (refused if the checkpoint folder holds an earlier one)")
    opt.add_argument("--set-aside", action="store_true",
                     help="with --no-resume: rename an earlier run's checkpoint folder to NAME.earlier-N first")
    run = parser.add_argument_group("hardware")
    run.add_argument("--quantization", choices=["nf4", "fp4", "int8"], default=None, help="4-bit base = QLoRA")
    run.add_argument("--device-map", default=None, help='"auto": one process, layers over all GPUs (no accelerate)')
    run.add_argument("--cpu", action="store_true", help="train on CPU even where a GPU exists (gloo between processes)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    out = parser.add_argument_group("reporting")
    out.add_argument("--evaluate", action="store_true", help="greedy answers on the held-out set before and after")
    out.add_argument("--report", type=Path, default=None, help="write a JSON report here")
    out.add_argument("--stop-after", type=int, default=None, help="stop (checkpointed) after N steps of this run")
    out.add_argument("--crash-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests: SIGKILL mid-run
    return parser.parse_args(argv)


def load_base(args, accelerator):
    """The frozen base model, placed for this process (DDP: own GPU; FSDP: CPU first, FSDP shards it)."""
    from accelerate.utils import DistributedType

    source = resolve_source(args.model, args.profile)
    if accelerator.distributed_type == DistributedType.FSDP:
        # PEFT's FSDP(-QLoRA) recipe: no device_map; 4-bit weights packed in bf16 storage so FSDP can shard them.
        from transformers import AutoModelForCausalLM

        from helpers.grok2.checkpoint import is_released_layout

        if args.quantization == "int8":
            raise helpers.CourseError("--quantization int8 cannot be trained under FSDP: its 8-bit weights cannot be "
                                      "sharded (PEFT's FSDP recipe is for 4-bit weights only).",
                                      "Use --quantization nf4 (QLoRA) with FSDP, or int8 with the DDP config or "
                                      "one process.")
        if Path(source).is_dir() and is_released_layout(source):
            raise helpers.CourseError(f"{source} is in the released tensor-parallel layout.",
                                      "Convert it once: helpers.grok2.convert_released_checkpoint(src, dst); use dst.")
        quantization = quantization_config(args.quantization, torch.bfloat16, storage=torch.bfloat16)
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16, quantization_config=quantization,
                                                    use_safetensors=True, trust_remote_code=False)
    verbose = accelerator.is_main_process
    if args.cpu:
        return helpers.load_model(source, dtype="float32", quantization=args.quantization, device_map={"": "cpu"},
                                  verbose=verbose)
    if accelerator.num_processes > 1:  # DDP: every process holds the whole model on its own GPU
        device_map = {"": accelerator.local_process_index}
    else:
        device_map = args.device_map or "auto"
    return helpers.load_model(source, quantization=args.quantization, device_map=device_map, verbose=verbose)


def check_folders(args, accelerator, output: Path, checkpoints: Path) -> None:
    """Refuse, before any model is loaded, an --output that would delete others' files and a checkpoint folder
    that would mix two runs; with --set-aside, move an earlier run out of the way (nothing deleted)."""
    finetune.check_adapter_destination(output)
    if args.set_aside and not args.no_resume:
        raise helpers.CourseError("--set-aside only applies to a new run.", "Add --no-resume, or drop --set-aside.")
    if args.set_aside and accelerator.is_main_process:
        moved = finetune.set_aside_run(checkpoints)
        if moved is not None:
            print(f"the earlier run in {checkpoints} is now {moved} (nothing was deleted)")
    accelerator.wait_for_everyone()
    if args.no_resume and finetune.list_checkpoints(checkpoints):
        raise helpers.CourseError(
            f"{checkpoints} holds the checkpoints of an earlier run; --no-resume there would mix two runs.",
            "Drop --no-resume to continue that run, pass --checkpoint-dir NEW_FOLDER (or --run-name) for a new one, "
            "or add --set-aside to rename the earlier run beside it first (nothing is deleted).")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    # find_unused_parameters: an expert that no token of this batch was routed to gets no gradient on that process.
    accelerator = Accelerator(cpu=args.cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    distributed = accelerator.num_processes > 1
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    say = accelerator.print
    profile = helpers.get_profile(args.profile)
    sizes = profile.sizes
    run_name = args.run_name or f"faq-fr-{profile.name}"
    output = args.output or helpers.workspace_dir() / "adapters" / run_name
    checkpoints = args.checkpoint_dir or helpers.workspace_dir() / "lora-checkpoints" / run_name
    say(f"{accelerator.num_processes} process(es), {accelerator.distributed_type.value}, device {accelerator.device}")
    check_folders(args, accelerator, output, checkpoints)

    tokenizer = helpers.load_tokenizer(args.tokenizer or args.model, profile=args.profile)
    train_rows, heldout_rows = finetune.load_chat_jsonl(args.train), finetune.load_chat_jsonl(args.heldout)
    finetune.check_heldout_is_new(train_rows, heldout_rows)
    max_len = args.max_seq_len or sizes.max_seq_len
    train_set = finetune.encode_dataset(tokenizer, train_rows, max_len)
    heldout_set = finetune.encode_dataset(tokenizer, heldout_rows, max_len)
    say(f"data: {len(train_set)} training / {len(heldout_set)} held-out conversations, longest "
        f"{max(len(e.input_ids) for e in train_set + heldout_set)} tokens")

    base = load_base(args, accelerator)
    rank = args.rank or sizes.lora_rank
    lora = finetune.LoraSettings(rank=rank, alpha=args.alpha or 2.0 * rank,
                                 dropout=sizes.lora_dropout if args.dropout is None else args.dropout,
                                 parts=tuple(p for p in args.parts.split(",") if p))
    model = finetune.apply_lora(base, lora, seed=args.seed, gradient_checkpointing=args.gradient_checkpointing,
                                sharded=fsdp)
    if fsdp:  # trainable and frozen weights in separate FSDP units (PEFT's FSDP recipe; use_orig_params=False)
        from peft.utils.other import fsdp_auto_wrap_policy

        accelerator.state.fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(model)
    trainable, total = finetune.count_parameters(model)
    say(f"LoRA r={lora.rank} alpha={lora.alpha:g} on {', '.join(lora.parts)}: {trainable:,} trainable of {total:,} "
        f"({trainable / total:.2%})")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "processes": accelerator.num_processes,
                    "distributed_type": accelerator.distributed_type.value, "trainable": trainable, "total": total}
    evaluate = args.evaluate and not fsdp and accelerator.is_main_process
    if evaluate:
        before = finetune.evaluate_answers(model, tokenizer, heldout_rows, sizes.max_new_tokens, examples=heldout_set)
        report["before"] = {"f1": before.f1, "exact": before.exact, "answer_loss": before.answer_loss}
        say(f"before: held-out F1 {before.f1:.3f}, exact {before.exact:.3f}, answer loss {before.answer_loss:.3f}")

    settings = finetune.TrainSettings(
        steps=args.steps or sizes.train_steps, batch_size=args.batch_size or sizes.train_batch_size,
        grad_accum_steps=args.grad_accum or sizes.grad_accum_steps,
        learning_rate=args.lr or sizes.learning_rate, warmup_steps=args.warmup, seed=args.seed,
        optimizer="adamw" if fsdp and args.optimizer == "auto" else args.optimizer,
        eval_every=args.eval_every, save_every=args.save_every)
    callbacks = []
    if args.crash_at_step is not None:
        def crash(record, history):
            if record["step"] == args.crash_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no checkpoint: a power cut

        callbacks.append(crash)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = finetune.train(model, train_set, settings, heldout=heldout_set, checkpoint_dir=checkpoints,
                            resume=not args.no_resume, stop_after=args.stop_after, callbacks=callbacks, pad_id=pad_id,
                            progress=accelerator.is_main_process, accelerator=accelerator if distributed else None)
    speed = finetune.throughput(result.history)
    report.update(steps_done=result.steps_done, interrupted=result.interrupted, resumed_from=result.resumed_from,
                  seconds=time.perf_counter() - started, throughput=speed, memory=result.memory,
                  history=result.history, checkpoint=str(result.checkpoint) if result.checkpoint else None,
                  recovered=result.notes)
    held = result.heldout_losses
    if held:
        say(f"held-out answer loss: {held[0][1]:.3f} (step {held[0][0]}) -> {held[-1][1]:.3f} (step {held[-1][0]})")
    if speed.get("steps"):
        say(f"{speed['median_step_seconds']:.3f} s/step, {speed['tokens_per_second']:,.0f} tokens/s "
            f"({accelerator.num_processes} process(es))")

    if not result.interrupted:
        saved = finetune.save_adapter(model, output, accelerator=accelerator if distributed else None)
        report["adapter"] = saved
        say(f"adapter: {saved['path']} ({saved['bytes'] / 1e6:.2f} MB)")
        if evaluate:
            after = finetune.evaluate_answers(accelerator.unwrap_model(model) if distributed else model, tokenizer,
                                              heldout_rows, sizes.max_new_tokens, examples=heldout_set)
            report["after"] = {"f1": after.f1, "exact": after.exact, "answer_loss": after.answer_loss}
            say(f"after:  held-out F1 {after.f1:.3f}, exact {after.exact:.3f}, answer loss {after.answer_loss:.3f}")
    else:
        say(f"stopped after step {result.steps_done}; run the same command again to resume from {result.checkpoint}")
    if args.report and accelerator.is_main_process:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1, default=str))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report


if __name__ == "__main__":
    try:
        main()
    except helpers.CourseError as error:  # a problem with a known fix: say it, without a traceback
        print(f"train_lora.py: {error}", file=sys.stderr)
        sys.exit(2)
