"""Tensor parallelism from a notebook: launch the tensor-parallel Grok 2 with torchrun, with a deadline and no process
left behind, refuse up front what the ranks could not load, and read back what each rank computed, read and sent.

    run = run_tensor_parallel(released_dir, tp_size=8, input_ids=ids)     # torchrun --nproc-per-node 8 ..., for real
    reference = single_process_logits(released_dir, ids)                  # the same files, one process
    max_abs_difference(run["correct"].logits, reference) <= LOGIT_TOLERANCE   # helpers.evaluation

The model-side code (what each rank reads and computes) is `helpers.grok2.tensor_parallel`; what the ranks send,
projected onto GPUs, is `helpers.machines.communication`; the picture of one layer split over the ranks is
`helpers.diagrams.draw_layer_split`. Backends: gloo is verified on CPU (the tests, lesson 02); the NCCL path (one GPU
per rank) is written but not yet run on GPUs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CourseError
from .grok2.configuration_grok2 import Grok2Config
from .grok2.tensor_parallel import (
    MissingShardError,
    TensorParallelError,
    check_tensor_parallel,
    rank_files,
    rank_shard,
    slice_count,
)
from .grok2.tensor_parallel_plan import name_files, pull_fix

# Logits of the tensor-parallel run and of one process agree to this (absolute; Grok caps logits at +-50):
# - the split changes only the order of float32 additions (partial sums joined by all-reduce), which moves a result by
#   a few units in its last place. Measured on the tiny Grok 2 (tests/test_tensor_parallel.py, lesson 02): 0 to 5e-6
#   at TP 1 (the same sums; one thread per rank takes other SIMD paths), about 4e-6 to 5e-6 at TP 2, 4 and 8.
# - 1e-4 is 26 float32 ulps of a logit at the cap (ulp 3.8e-6 between 32 and 64): room for every layer's rounding,
#   three orders below what bf16 changes (the tiny model in bf16 is 0.3 away from fp32) and four orders below a wrong
#   split (the naive TP 4 load: 4.6).
LOGIT_TOLERANCE = 1e-4
MODES = ("correct", "naive")
# A traceback's last line, as torchrun prints a rank's: "[rank1]: safetensors...SafetensorError: ..."
_EXCEPTION_LINE = re.compile(r"^(\[rank\d+\]: )?[A-Za-z_][\w.]*(Error|Exception|Interrupt)(: .*)?$")
DEFAULT_TIMEOUT_S = 240.0


# ------------------------------------------------------------------------------------------- the run


@dataclass
class ModeRun:
    """One load (correct, or naive) under torchrun: its logits and what every rank read and sent."""

    logits: torch.Tensor
    tokens: torch.Tensor | None  # greedy continuation, when asked
    ranks: list[dict]  # per rank: files {name: tensor bytes read}, bytes_read, weight_bytes, seconds
    collectives: list[dict]  # what one forward pass sent (every rank sends the same): op, what, layer, bytes, tokens
    tokens_in_forward: int
    replicas_identical: bool  # every rank ended with the same hidden states (the replicated activations)

    def bytes_all_reduced_per_token_per_layer(self) -> float:
        """Counted from the calls really made: the all-reduce payload of the decoder layers / (layers x tokens)."""
        layers = {c["layer"] for c in self.collectives if c["layer"] is not None}
        in_layers = sum(c["bytes"] for c in self.collectives if c["op"] == "all_reduce" and c["layer"] is not None)
        return in_layers / max(1, len(layers)) / self.tokens_in_forward if layers else 0.0

    def rank_rows(self) -> list[dict]:
        """One row per rank for a table: files opened, which slice files, tensor bytes read, weights held."""
        from .units import format_bytes

        rows = []
        for rank in self.ranks:
            slices = sorted({f.rsplit("-TP-", 1)[1].removesuffix(".safetensors") for f in rank["files"]
                             if "-TP-common" not in f})
            rows.append({"rank": rank["rank"], "files opened": len(rank["files"]),
                         "expert slice files": ", ".join(f"TP-{s}" for s in slices),
                         "bytes read": format_bytes(rank["bytes_read"]),
                         "weights held": format_bytes(rank["weight_bytes"])})
        return rows

    def bytes_per_token(self) -> dict[str, float]:
        """Payload bytes per token of the whole forward pass, by collective."""
        totals: dict[str, float] = {}
        for call in self.collectives:
            totals[call["op"]] = totals.get(call["op"], 0.0) + call["bytes"] / self.tokens_in_forward
        return totals


@dataclass
class TensorParallelRun:
    tp_size: int  # the processes torchrun started (--nproc-per-node)
    backend: str
    device: str
    command: str  # the torchrun command line that ran
    seconds: float  # wall time of the whole launch: interpreters starting, loading, running
    runs: dict[tuple[int, str], ModeRun]  # (TP size, mode) -> what that run computed

    def __getitem__(self, mode: str) -> ModeRun:
        """The run at the launch's own size: run["correct"], run["naive"]."""
        return self.runs[(self.tp_size, mode)]

    def at(self, tp_size: int, mode: str = "correct") -> ModeRun:
        """A run of `then=`: run.at(4, "naive")."""
        return self.runs[(tp_size, mode)]


def _torchrun() -> list[str]:
    """The torchrun of this Python (the console script next to it, else `python -m torch.distributed.run`)."""
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _plans(tp_size: int, modes, then) -> list[str]:
    return [f"{size}:{','.join(run_modes)}" for size, run_modes in ((tp_size, tuple(modes)), *then)]


def torchrun_command(checkpoint, tp_size: int, inputs, output, modes=("correct",), new_tokens: int = 0, then=(),
                     deadline_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """`torchrun --standalone --nproc-per-node N -m helpers.grok2.tensor_parallel ...` as a list of arguments."""
    plans = [arg for plan in _plans(tp_size, modes, then) for arg in ("--plan", plan)]
    return [*_torchrun(), "--standalone", "--nproc-per-node", str(tp_size), "-m", "helpers.grok2.tensor_parallel",
            "--checkpoint", str(checkpoint), "--inputs", str(inputs), "--output", str(output), *plans,
            "--new-tokens", str(new_tokens), "--deadline", str(deadline_s)]


def check_tensor_parallel_run(checkpoint, tp_size: int, modes=("correct",)) -> None:
    """Refuse, before any process starts, a TP size the model or the files cannot take, or a missing file."""
    checkpoint = Path(checkpoint)
    if set(modes) - set(MODES) or not modes:
        raise CourseError(f"Unknown load mode(s) {sorted(set(modes) - set(MODES)) or modes}.",
                          f"use {MODES[0]!r} and/or {MODES[1]!r}.")
    if not (checkpoint / "config.json").is_file():
        raise CourseError(f"{checkpoint} has no config.json: it is not a checkpoint folder.",
                          "save one with helpers.grok2.save_in_released_layout(model, folder), or point at your "
                          "download of xai-org/grok-2.")
    _refuse_lfs_pointers(checkpoint)
    try:
        config = Grok2Config.from_pretrained(checkpoint)
        slices = slice_count(checkpoint, config)
        check_tensor_parallel(config, tp_size, slices)
        for mode in modes:
            for rank in range(tp_size):
                rank_files(checkpoint, rank_shard(config, tp_size, rank, slices, naive=mode == "naive"))
    except (TensorParallelError, MissingShardError) as error:
        raise CourseError(error.problem, error.fix) from None


def _refuse_lfs_pointers(checkpoint: Path) -> None:
    """A weight file still a Git LFS pointer (cloned without pulling it) would pass the ranks' check by name and kill
    its rank with "HeaderTooLarge" once launched: name every such file here, before any process starts. Every file of
    the released layout is read by some rank, so each is checked (a stat each, and at most 1 KB read of small ones)."""
    from .download import read_pointer

    pointers = [path.name for path in sorted(checkpoint.glob("pytorch_model-*-TP-*.safetensors"))
                if read_pointer(path)]
    if pointers:
        raise CourseError(f"{len(pointers)} file(s) in {checkpoint} are still Git LFS pointers, not weights: "
                          f"{name_files(pointers)}.", pull_fix(pointers))


def _our_worker(pid: int, output: Path) -> bool:
    """Is `pid` still one of this launch's ranks? (its command line names this launch's own output folder)"""
    try:
        return str(output) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _stop(agent: subprocess.Popen, output: Path) -> None:
    """Leave nothing running: torchrun stops its ranks on SIGTERM; any rank still alive after that is killed by id."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    for pid_file in output.glob("rank-*.pid"):
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            continue
        if _our_worker(pid, output):
            os.kill(pid, signal.SIGKILL)


def _read_run(output: Path, tp_size: int, command: list[str], seconds: float) -> TensorParallelRun:
    from safetensors.torch import load_file

    report = json.loads((output / "report.json").read_text())
    tensors = load_file(output / "logits.safetensors")
    runs = {}
    for rec in report["runs"].values():
        tp, mode = rec["tp_size"], rec["mode"]
        runs[(tp, mode)] = ModeRun(tensors[f"tp{tp}.{mode}.logits"], tensors.get(f"tp{tp}.{mode}.tokens"),
                                   rec["ranks"], rec["collectives"], rec["tokens_in_forward"], rec["replicas_identical"])
    shown = " ".join(["torchrun", *command[command.index("--standalone"):]])
    return TensorParallelRun(tp_size, report["backend"], report["device"], shown, seconds, runs)


def run_tensor_parallel(checkpoint, tp_size: int, input_ids: torch.Tensor, modes=("correct",), new_tokens: int = 0,
                        then=(), timeout_s: float = DEFAULT_TIMEOUT_S, scratch_dir=None) -> TensorParallelRun:
    """Run Grok 2 from a released-layout folder on `tp_size` processes under torchrun and read back the logits for
    `input_ids` and what each rank read and sent. Backend: gloo on CPU (verified: the tests, lesson 02); NCCL where
    each rank has a GPU (written, not yet run on GPUs).

    `modes`: "correct" (rank r concatenates its share of the slice files) and/or "naive" (rank r reads TP-00r only,
    as SGLang's loader does; SGLang PR #36438 reports it), run one after the other. `then`: more runs by the same processes, as
    (TP size, modes): `then=[(4, ("naive", "correct"))]` on 8 processes forms two groups of 4 ranks, one per mode,
    running side by side (one launch instead of two: each process start costs seconds).

    Past `timeout_s` the launch is stopped, and no process is left behind (nor on an error or an interrupt): torchrun
    is stopped, any rank still alive is killed by its id, and each rank also exits by itself at the deadline. The
    launch's files (inputs, logits, report, log) live in a fresh folder under `scratch_dir` (default: the system's
    temporary folder), removed at the end.
    """
    checkpoint = Path(checkpoint).resolve()
    check_tensor_parallel_run(checkpoint, tp_size, tuple(modes))
    for size, run_modes in then:
        if not isinstance(size, int) or size < 1 or tp_size % size or len(run_modes) != tp_size // size > 1:
            raise CourseError(f"then=({size}, {tuple(run_modes)}): {tp_size} processes form {tp_size}//{size} groups, "
                              f"each running one mode.",
                              f"use a size that divides {tp_size}, with one mode per group (or one group).")
        check_tensor_parallel_run(checkpoint, size, tuple(run_modes))
    from safetensors.torch import save_file

    output = Path(tempfile.mkdtemp(prefix="grok2-tensor-parallel-", dir=scratch_dir))
    try:
        save_file({"input_ids": input_ids.detach().to("cpu", torch.long).contiguous()}, output / "inputs.safetensors")
        command = torchrun_command(checkpoint, tp_size, output / "inputs.safetensors", output, modes, new_tokens,
                                   then, deadline_s=timeout_s)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # one thread per rank: no oversubscribing
        started = time.perf_counter()
        with open(output / "torchrun.log", "w") as log:
            agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                code = agent.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                _stop(agent, output)
        seconds = time.perf_counter() - started
        lines = (output / "torchrun.log").read_text(errors="replace").splitlines()
        if code is None:
            raise CourseError(f"torchrun did not finish in {timeout_s:.0f} s (stopped; no process left).",
                              "a busy machine: close other notebooks, or pass timeout_s=... with more time.")
        if code != 0 or not (output / "report.json").exists():
            errors = list(dict.fromkeys(line.strip() for line in lines if _EXCEPTION_LINE.match(line.strip())))
            raise CourseError(f"torchrun exited with code {code}; the ranks' errors:\n" + "\n".join(errors[:5] or
                              lines[-15:]), "the first error names the problem (a file, a size); fix it and run again.")
        return _read_run(output, tp_size, command, seconds)
    finally:
        shutil.rmtree(output, ignore_errors=True)


# ------------------------------------------------------------------------------------------- one process


def tiny_released_layout(folder=None) -> Path:
    """The tiny Grok 2 in the released layout (15 TP-common + 3 x 8 slice files), written once; a copy there is kept.
    Default folder: workspace/released-layout/tiny (where lesson 02 writes it)."""
    from .grok2.checkpoint import is_released_layout, save_in_released_layout
    from .loading import load_model
    from .paths import TINY_MODEL_DIR, workspace_dir

    folder = Path(folder or workspace_dir() / "released-layout" / "tiny")
    if is_released_layout(folder):
        return folder
    if folder.exists() and any(folder.iterdir()):
        raise CourseError(f"{folder} holds other files, not a checkpoint in the released layout.",
                          "pass another folder: tiny_released_layout(folder=...); the course never overwrites yours.")
    return save_in_released_layout(load_model(TINY_MODEL_DIR, verbose=False), folder)


def single_process_logits(checkpoint, input_ids: torch.Tensor, new_tokens: int = 0):
    """The reference: the same released files stitched into one model in this process (`load_released_checkpoint`).
    Returns the logits, and the greedy continuation when `new_tokens` > 0."""
    from .grok2.checkpoint import load_released_checkpoint
    from .grok2.tensor_parallel import _checkpoint_dtype

    config = Grok2Config.from_pretrained(checkpoint)
    model = load_released_checkpoint(checkpoint, dtype=_checkpoint_dtype(config))
    with torch.no_grad():
        logits = model(input_ids, use_cache=False).logits
        if not new_tokens:
            return logits
        ids = input_ids
        for _ in range(new_tokens):  # greedy, the same loop as the tensor-parallel ranks run
            ids = torch.cat([ids, model(ids, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    return logits, ids[:, input_ids.shape[1]:]


__all__ = ["LOGIT_TOLERANCE", "ModeRun", "TensorParallelRun", "torchrun_command", "check_tensor_parallel_run",
           "run_tensor_parallel", "tiny_released_layout", "single_process_logits"]
