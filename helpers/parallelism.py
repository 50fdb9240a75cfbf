"""Tensor parallelism in the course: launch the tensor-parallel Grok 2 with torchrun from a notebook, compare it with
one process, project its communication onto a real GPU server, and draw one layer split over the ranks.

    run = run_tensor_parallel(released_dir, tp_size=8, input_ids=ids)     # torchrun --nproc-per-node 8 ..., for real
    reference = single_process_logits(released_dir, ids)                  # the same files, one process
    max_logit_difference(run["correct"].logits, reference) <= LOGIT_TOLERANCE
    projection = project_decode(grok_config, H100_SXM, gpus=8)              # a projection, from the config

The model-side code (what each rank reads and computes) is `helpers.grok2.tensor_parallel`; this module adds what a
lesson needs around it: the process launch (with a deadline, and no process left behind), the course's errors, the
datasheet figures of `helpers.accelerators`, and the picture.
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

from .accelerators import H100_SXM, Accelerator
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
    try:
        config, slices = Grok2Config.from_pretrained(checkpoint), slice_count(checkpoint)
        check_tensor_parallel(config, tp_size, slices)
        for mode in modes:
            for rank in range(tp_size):
                rank_files(checkpoint, rank_shard(config, tp_size, rank, slices, naive=mode == "naive"))
    except (TensorParallelError, MissingShardError) as error:
        raise CourseError(error.problem, error.fix) from None


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
    """Run Grok 2 from a released-layout folder on `tp_size` processes under torchrun (gloo on CPU, NCCL where each
    rank has a GPU) and read back the logits for `input_ids` and what each rank read and sent.

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


def max_logit_difference(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return (logits.float() - reference.float()).abs().max().item()


# ------------------------------------------------------------------------------------------- the projection


def collectives_per_token(config, tp_size: int, bytes_per_value: int) -> dict[str, float]:
    """What one token's forward pass sends, from the config: the formula the tiny model's counts check.

    Per decoder layer two all-reduces of `hidden_size` values (attention output; experts + dense MLP); one more for
    the vocabulary-parallel embedding; one all-gather of the logits, each rank contributing vocab / N of them.
    """
    hidden, layers = config.hidden_size, config.num_hidden_layers
    return {
        "all_reduces": 2 * layers + 1,
        "all_gathers": 1,
        "all_reduce_bytes_per_layer": 2 * hidden * bytes_per_value,
        "all_reduce_bytes": (2 * layers + 1) * hidden * bytes_per_value,
        "all_gather_bytes_per_rank": config.vocab_size // tp_size * bytes_per_value,
    }


@dataclass(frozen=True)
class DecodeProjection:
    """A PROJECTION for one decoded token (batch 1) on `gpus` GPUs of one kind: datasheet peaks and a public latency,
    not a measurement. Times in seconds per token."""

    accelerator: str
    gpus: int
    communication: dict  # collectives_per_token at bf16 activations
    latency_bound_s: float  # every collective costs one small all-reduce's measured latency
    bandwidth_bound_s: float  # ring all-reduce / all-gather bytes each GPU sends, over its link
    memory_bound_s: float  # each GPU reads its 1/N of the active weights and of the KV cache, at peak bandwidth
    weight_precision: str
    context_tokens: int
    latency_source: str
    latency_s: float  # one small all-reduce (helpers.accelerators), the figure the latency bound multiplies
    link_bandwidth: float  # bytes/s per GPU, one direction (helpers.accelerators)

    @property
    def with_communication_s(self) -> float:
        """Memory bound plus the collectives' latency: a layer cannot start before the previous one's sum arrives."""
        return self.memory_bound_s + max(self.latency_bound_s, self.bandwidth_bound_s)

    def tokens_per_s(self, with_communication: bool = True) -> float:
        return 1.0 / (self.with_communication_s if with_communication else self.memory_bound_s)

    def summary(self) -> list[str]:
        """The projection in a few lines, each labelled as what it is."""
        from .units import format_bytes

        c, us = self.communication, 1e6
        return [
            f"PROJECTION for one decoded token (batch 1) on {self.gpus} x {self.accelerator}, not a measurement:",
            f"  sent per token: {c['all_reduces']} all-reduces of {format_bytes(c['all_reduce_bytes_per_layer'] / 2)} "
            f"(2 per layer + the embedding) = {format_bytes(c['all_reduce_bytes'])}, and one all-gather of the logits "
            f"({format_bytes(c['all_gather_bytes_per_rank'])} from each GPU)",
            f"  latency-bound:   {self.latency_bound_s * us:7.0f} us per token "
            f"({c['all_reduces'] + c['all_gathers']} collectives x {self.latency_s * us:.1f} us, one small all-reduce "
            f"as measured in public)",
            f"  bandwidth-bound: {self.bandwidth_bound_s * us:7.1f} us per token (what each GPU sends in ring "
            f"all-reduces and the all-gather, over its {self.link_bandwidth / 1e9:.0f} GB/s link)",
            f"  memory roofline ({self.weight_precision} weights, {self.context_tokens:,}-token context): "
            f"{self.memory_bound_s * 1e3:.2f} ms per token = at most {self.tokens_per_s(False):.0f} tokens/s",
            f"  with the all-reduces on the critical path: {self.with_communication_s * 1e3:.2f} ms = at most "
            f"{self.tokens_per_s():.0f} tokens/s ({self.latency_bound_s / self.memory_bound_s:.0%} slower)",
        ]


def project_decode(config, accelerator: Accelerator = H100_SXM, gpus: int = 8, weight_precision: str = "fp8",
                   context_tokens: int = 8192) -> DecodeProjection:
    """Project Grok 2.5's decode step at tensor parallelism `gpus` (batch 1): memory roofline and communication."""
    from .memory import BYTES_PER_PARAM, plan_memory

    if accelerator.all_reduce_latency is None:
        raise CourseError(f"helpers.accelerators has no public all-reduce latency for {accelerator.name}.",
                          "project on H100_SXM, or add the figure with its source to helpers/accelerators.py.")
    comm = collectives_per_token(config, gpus, bytes_per_value=2)  # activations travel in bf16
    calls = comm["all_reduces"] + comm["all_gathers"]
    ring = 2 * (gpus - 1) / gpus  # a ring all-reduce sends (and receives) 2(N-1)/N of the buffer per GPU
    wire = comm["all_reduce_bytes"] * ring
    wire += comm["all_gather_bytes_per_rank"] * (gpus - 1)  # an all-gather sends each slice to N-1 peers
    plan = plan_memory(config, name="grok-2")
    matrices = plan.active_params - plan.embedding_params  # of the embedding table one row per token is read
    per_gpu = (matrices * BYTES_PER_PARAM[weight_precision] + plan.kv_cache_bytes(context_tokens)) / gpus
    return DecodeProjection(accelerator.name, gpus, comm, calls * accelerator.all_reduce_latency,
                            wire / accelerator.link_bandwidth, per_gpu / accelerator.memory_bandwidth,
                            weight_precision, context_tokens, accelerator.all_reduce_source,
                            accelerator.all_reduce_latency, accelerator.link_bandwidth)


# ------------------------------------------------------------------------------------------- the picture


def _heads(word: str, heads: tuple[int, int], span) -> str:
    return f"{word}{'s' if heads[1] - heads[0] > 1 else ''} {span(*heads)}"


def _layer_rows(config, tp_size: int, slices: int) -> list[tuple[str, str, str, list[str] | str]]:
    """(row id, what, kind, one label per rank, or one label for a collective), from `rank_shard` itself."""
    from .diagrams import ATTENTION, DENSE, EXPERT, NORM, ROUTER, SUM

    shards = [rank_shard(config, tp_size, r, slices) for r in range(tp_size)]
    span = lambda a, b: f"{a:,}-{b - 1:,}" if b - a > 1 else f"{a:,}"  # noqa: E731
    hidden = f"{config.hidden_size:,} values per token"
    return [
        ("pre_attn_norm", "pre_attn_norm", NORM, ["a copy"] * tp_size),
        ("q_proj", "q_proj: query heads\n(column-parallel)", ATTENTION, [_heads("head", s.q_heads, span) for s in shards]),
        ("kv_proj", "k_proj, v_proj: KV heads\n(column-parallel)", ATTENTION,
         [_heads("KV head", s.kv_heads, span) for s in shards]),
        ("o_proj", "o_proj: input columns\n(row-parallel)", ATTENTION, [span(*s.o_columns) for s in shards]),
        ("all_reduce_1", "all-reduce", SUM, f"all-reduce: sum the {tp_size} partial attention outputs ({hidden})"),
        ("middle_norms", "post_attn_norm,\npre_moe_norm", NORM, ["a copy"] * tp_size),
        ("router", "router (gate)", ROUTER, [f"{config.num_local_experts} experts, top {config.num_experts_per_tok}"]
         * tp_size),
        ("experts", "every expert: w1, w3 rows,\nw2 columns", EXPERT,
         [f"{span(r * config.moe_intermediate_size // tp_size, (r + 1) * config.moe_intermediate_size // tp_size)}"
          f"\nfiles TP-{','.join(f'{f:03d}' for f in s.slice_files)}" for r, s in enumerate(shards)]),
        ("dense_mlp", "dense MLP: gate, up rows,\ndown columns", DENSE, [span(*s.mlp_rows) for s in shards]),
        ("all_reduce_2", "all-reduce", SUM, f"all-reduce: sum the {tp_size} partial (experts + dense MLP) outputs "
                                            f"({hidden})"),
        ("post_moe_norm", "post_moe_norm", NORM, ["a copy"] * tp_size),
    ]


def draw_layer_split(config, tp_size: int = 8, slices: int | None = None, bytes_per_weight: int = 2):
    """One decoder layer of `config` split over `tp_size` ranks, as `helpers.grok2.tensor_parallel` splits it: what
    each rank holds and computes, and the two all-reduces. Every label comes from the config and `rank_shard`."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .memory import grok2_parameter_breakdown
    from .units import format_bytes

    slices = slices or tp_size
    rows = _layer_rows(config, tp_size, slices)
    label_w, cell_w, cell_h = 2.6, 1.25, 0.78
    figure, axis = plt.subplots(figsize=(label_w + tp_size * cell_w * 0.95, 0.55 * len(rows) + 1.6))
    plt.close(figure)  # shown once, when a cell returns it
    axis.set_axis_off()
    axis.set_xlim(0, label_w + tp_size * cell_w)
    axis.set_ylim(-len(rows) - 0.9, 0.9)
    for r in range(tp_size):
        axis.text(label_w + (r + 0.5) * cell_w, 0.35, f"rank {r}", ha="center", fontsize=9, weight="bold",
                  gid=f"tp:rank:{r}")
    for i, (row, what, colour, labels) in enumerate(rows):
        y = -i - 0.5
        axis.text(label_w - 0.1, y, what, ha="right", va="center", fontsize=8, gid=f"tp:what:{row}")
        if isinstance(labels, str):  # a collective spans every rank
            axis.add_patch(Rectangle((label_w + 0.03, y - cell_h / 2), tp_size * cell_w - 0.06, cell_h,
                                     facecolor=colour, edgecolor="#c0392b", linewidth=1.6, gid=f"tp:{row}"))
            axis.text(label_w + tp_size * cell_w / 2, y, labels, ha="center", va="center", fontsize=8.5,
                      color="#c0392b", weight="bold", gid=f"tp:{row}:label")
            continue
        for r, label in enumerate(labels):
            axis.add_patch(Rectangle((label_w + r * cell_w + 0.03, y - cell_h / 2), cell_w - 0.06, cell_h,
                                     facecolor=colour, edgecolor="#444444", linewidth=0.8, gid=f"tp:{row}:{r}"))
            axis.text(label_w + (r + 0.5) * cell_w, y, label, ha="center", va="center", fontsize=7,
                      gid=f"tp:{row}:{r}:label")
    parts = grok2_parameter_breakdown(config)
    final_norm = config.hidden_size
    layer = (sum(parts.values()) - parts["embeddings"] - parts["lm_head"] - final_norm) / config.num_hidden_layers
    axis.set_title(f"One of {config.num_hidden_layers} decoder layers ({format_bytes(layer * bytes_per_weight)} in "
                   f"{bytes_per_weight}-byte weights) on {tp_size} ranks: matrices split {tp_size} ways, norms and "
                   f"router copied", fontsize=10)
    return figure


__all__ = ["LOGIT_TOLERANCE", "ModeRun", "TensorParallelRun", "torchrun_command", "check_tensor_parallel_run",
           "run_tensor_parallel", "tiny_released_layout", "single_process_logits", "max_logit_difference", "collectives_per_token",
           "DecodeProjection", "project_decode", "draw_layer_split"]
