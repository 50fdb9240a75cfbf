"""Tensor-parallel Grok 2: how each of N ranks reads its share of the released files and computes its share of every
layer, the way SGLang's `grok.py` splits the model, with torch.distributed's all-reduce and all-gather joining the parts.

The split, one decoder layer at a time (rank r of N; the why of each in one sentence):

- Attention, column-parallel q/k/v: rank r computes its own query heads and the KV heads they read, because heads
  never look at each other, so no rank needs another's before the output projection.
- o_proj, row-parallel: rank r multiplies its block of o_proj's input columns (its heads' outputs), giving a partial
  sum of the full output; one all-reduce adds the N partial sums.
- Dense MLP, column- then row-parallel: gate/up rows [r*I/N, (r+1)*I/N) and the same down_proj columns, because GeGLU
  is elementwise in the intermediate dimension, so the only exchange is the final sum.
- Experts: each expert's intermediate dimension, split exactly as the released files split it (w1/w3 rows and w2
  columns of TP-00r), for the same reason as the dense MLP; the MoE and MLP partial sums share one all-reduce.
- Router and the four RMSNorms per layer: replicated, because they are tiny and need the whole hidden vector, which
  every rank holds after each all-reduce; so every rank routes each token to the same two experts.
- Embedding and LM head: split by vocabulary rows, because they are the two largest matrices; a rank looks up only the
  tokens in its rows (zeros elsewhere, joined by an all-reduce) and scores only its slice of the vocabulary (joined by
  an all-gather).

So each layer costs two all-reduces of `hidden_size` values per token, and a whole forward one more (the embedding)
plus one all-gather (the logits). `Collectives` counts what is really sent.

The released files are cut for N = 8. At N = 4 rank r must concatenate slices 2r and 2r+1 (here: `slice_files`). A
loader that takes only TP-00r, as SGLang's glob `*-TP-{rank:03d}` does (reported in SGLang PR #36438, Aug 2026, still
open), leaves half of every expert unread and gives wrong logits without an error: every tensor name is found, only
its width is short (`naive=True` reproduces it, for the lesson).

Fewer query heads than ranks (the tiny model has 4 query heads, 2 KV heads, at N = 8): this code shares them, ranks
computing the same head and each taking its own block of o_proj's input columns, the rule SGLang applies to KV heads
only. SGLang itself asserts `total_num_heads % tp_size == 0` and would refuse the tiny model at N = 8; Grok 2.5 (64
query heads, 8 KV heads) never needs the sharing at N <= 8.

Backends: gloo on CPU, verified (tests/test_tensor_parallel.py, lesson 02); NCCL when every rank has a GPU, written
but not yet run on GPUs.

Run it with `torchrun --nproc-per-node N -m helpers.grok2.tensor_parallel --checkpoint DIR --inputs FILE --output DIR`
(`main`); `helpers.parallelism.run_tensor_parallel` does that from a notebook and reads the results back.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.cache_utils import DynamicCache

from .configuration_grok2 import Grok2Config
from .modeling_grok2 import (
    Grok2Attention,
    Grok2MLP,
    Grok2RMSNorm,
    Grok2RotaryEmbedding,
    Grok2SparseMoeBlock,
    attention_temperature,
    build_attention_mask,
    softcap,
)
from .tensor_parallel_plan import (
    MissingShardError,
    RankReader,
    RankShard,
    TensorParallelError,
    check_tensor_parallel,
    rank_files,
    rank_shard,
    slice_count,
)


# ------------------------------------------------------------------------------------------------ the collectives


@dataclass
class Collectives:
    """The two collectives tensor parallelism needs, each call recorded: what it joined, its size, how many tokens."""

    group: object = None
    sent: list[dict] = field(default_factory=list)

    @property
    def size(self) -> int:
        return dist.get_world_size(self.group) if dist.is_initialized() else 1

    def all_reduce(self, tensor: torch.Tensor, what: str, layer: int | None, tokens: int) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place (nothing is sent on one rank)."""
        if self.size > 1:
            dist.all_reduce(tensor, group=self.group)
            self.sent.append({"op": "all_reduce", "what": what, "layer": layer, "tokens": tokens,
                              "bytes": tensor.numel() * tensor.element_size()})
        return tensor

    def all_gather(self, tensor: torch.Tensor, what: str, tokens: int) -> torch.Tensor:
        """Every rank's `tensor`, concatenated in rank order along the last dimension."""
        if self.size == 1:
            return tensor
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor, group=self.group)
        self.sent.append({"op": "all_gather", "what": what, "layer": None, "tokens": tokens,
                          "bytes": tensor.numel() * tensor.element_size()})
        return torch.cat(parts, dim=-1)


# ------------------------------------------------------------------------------------------------ the rank's model


class RowParallelOutput(nn.Module):
    """o_proj on one rank: its block of o_proj's input columns times the heads' output there (a partial sum)."""

    def __init__(self, weight: torch.Tensor, offset: int, heads_width: int):
        super().__init__()
        # The block must lie inside the output of the heads this rank computed (`heads_width` values per token); a
        # block cut past it would be silently narrowed by the slice in `forward`, dropping o_proj columns.
        if offset < 0 or weight.shape[1] == 0 or offset + weight.shape[1] > heads_width:
            raise ValueError(f"o_proj columns {offset}..{offset + weight.shape[1] - 1} of this rank fall outside its "
                             f"heads' {heads_width} output values: heads x head_dim does not split over the ranks")
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.offset = offset  # where this rank's columns start inside the output of the heads it computed

    def forward(self, heads_output: torch.Tensor) -> torch.Tensor:
        return F.linear(heads_output[..., self.offset:self.offset + self.weight.shape[1]], self.weight)


def _set(module: nn.Module, tensor: torch.Tensor, device, dtype) -> None:
    """Give a module (built on the meta device, so it knows its shape) the weight this rank read."""
    if tuple(module.weight.shape) != tuple(tensor.shape):
        raise ValueError(f"a {type(module).__name__} of this rank needs a weight of shape {tuple(module.weight.shape)}, "
                         f"the files gave {tuple(tensor.shape)}: are all the slice files there, from one checkpoint?")
    module.weight = nn.Parameter(tensor.to(device=device, dtype=dtype), requires_grad=False)


class TensorParallelLayer(nn.Module):
    """One decoder layer's share on this rank, in the order of `Grok2DecoderLayer`, with the two all-reduces."""

    def __init__(self, local: Grok2Config, layer_idx: int, reader: RankReader, shard: RankShard, device, dtype):
        super().__init__()
        prefix, self.layer_idx = f"model.layers.{layer_idx}.", layer_idx
        with torch.device("meta"):
            self.self_attn = Grok2Attention(local, layer_idx)
            self.block_sparse_moe = Grok2SparseMoeBlock(local)
            self.mlp = Grok2MLP(local.hidden_size, local.intermediate_size) if local.residual_moe else None
            norms = ("pre_attn_norm", "post_attn_norm", "pre_moe_norm", "post_moe_norm")
            for norm in norms:
                setattr(self, norm, Grok2RMSNorm(local.hidden_size, local.rms_norm_eps))
        for norm in norms:  # replicated
            _set(getattr(self, norm), reader.read(prefix + norm + ".weight"), device, dtype)
        hd = local.head_dim
        attn = prefix + "self_attn."
        _set(self.self_attn.q_proj, reader.read(attn + "q_proj.weight", 0, _times(shard.q_heads, hd)), device, dtype)
        _set(self.self_attn.k_proj, reader.read(attn + "k_proj.weight", 0, _times(shard.kv_heads, hd)), device, dtype)
        _set(self.self_attn.v_proj, reader.read(attn + "v_proj.weight", 0, _times(shard.kv_heads, hd)), device, dtype)
        o_weight = reader.read(attn + "o_proj.weight", 1, shard.o_columns)
        self.self_attn.o_proj = RowParallelOutput(o_weight.to(device=device, dtype=dtype),
                                                  shard.o_columns[0] - shard.q_heads[0] * hd,
                                                  local.num_attention_heads * hd)
        moe = prefix + "block_sparse_moe."
        _set(self.block_sparse_moe.gate, reader.read(moe + "gate.weight"), device, dtype)  # replicated
        for e, expert in enumerate(self.block_sparse_moe.experts):
            for name in ("w1", "w2", "w3"):
                dim = 1 if name == "w2" else 0
                _set(getattr(expert, name), reader.read_slices(f"{moe}experts.{e}.{name}.weight", dim), device, dtype)
        if self.mlp is not None:
            mlp = prefix + "mlp."
            _set(self.mlp.gate_proj, reader.read(mlp + "gate_proj.weight", 0, shard.mlp_rows), device, dtype)
            _set(self.mlp.up_proj, reader.read(mlp + "up_proj.weight", 0, shard.mlp_rows), device, dtype)
            _set(self.mlp.down_proj, reader.read(mlp + "down_proj.weight", 1, shard.mlp_rows), device, dtype)

    def forward(self, h, position_embeddings, temperature, mask, cache, comm: Collectives):
        tokens = h.shape[0] * h.shape[1]
        attn = self.self_attn(self.pre_attn_norm(h), position_embeddings, temperature, mask, cache)
        attn = comm.all_reduce(attn, "attention output", self.layer_idx, tokens)
        h = h + self.post_attn_norm(attn)
        x = self.pre_moe_norm(h)
        ff = self.block_sparse_moe(x)
        if self.mlp is not None:
            ff = (ff + self.mlp(x)) / math.sqrt(2)  # the /sqrt(2) is linear: applied to each partial sum, as SGLang does
        ff = comm.all_reduce(ff, "experts + dense MLP output", self.layer_idx, tokens)
        return h + self.post_moe_norm(ff)


def _times(span: tuple[int, int], factor: int) -> tuple[int, int]:
    return span[0] * factor, span[1] * factor


class TensorParallelGrok2(nn.Module):
    """This rank's share of Grok 2. `forward(ids)` returns the full logits, identical on every rank."""

    def __init__(self, config: Grok2Config, reader: RankReader, shard: RankShard, comm: Collectives,
                 device="cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config, self.shard, self.comm = config, shard, comm
        local = copy.deepcopy(config)
        local.num_attention_heads = shard.q_heads[1] - shard.q_heads[0]
        local.num_key_value_heads = shard.kv_heads[1] - shard.kv_heads[0]
        local.intermediate_size = shard.mlp_rows[1] - shard.mlp_rows[0]
        local.moe_intermediate_size = config.moe_intermediate_size // shard.slices * len(shard.slice_files)
        with torch.device("meta"):
            self.embed_tokens = nn.Embedding(shard.vocab_rows[1] - shard.vocab_rows[0], config.hidden_size)
            self.lm_head = nn.Linear(config.hidden_size, self.embed_tokens.num_embeddings, bias=False)
            self.norm = Grok2RMSNorm(config.hidden_size, config.rms_norm_eps)
        _set(self.embed_tokens, reader.read("model.embed_tokens.weight", 0, shard.vocab_rows), device, dtype)
        _set(self.lm_head, reader.read("lm_head.weight", 0, shard.vocab_rows), device, dtype)
        _set(self.norm, reader.read("model.norm.weight"), device, dtype)
        self.layers = nn.ModuleList([TensorParallelLayer(local, i, reader, shard, device, dtype)
                                     for i in range(config.num_hidden_layers)])
        self.rotary_emb = Grok2RotaryEmbedding(config).to(device)
        self.eval()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary-parallel lookup: rows this rank does not hold give zeros; the all-reduce fills them in."""
        local = ids - self.shard.vocab_rows[0]
        mine = (local >= 0) & (local < self.embed_tokens.num_embeddings)
        rows = self.embed_tokens(local.clamp(0, self.embed_tokens.num_embeddings - 1)) * mine[..., None]
        return self.comm.all_reduce(rows, "embedding", None, ids.numel())

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, cache: DynamicCache | None = None) -> torch.Tensor:
        batch, seq = ids.shape
        h = self.embed(ids) * self.config.embedding_multiplier_scale
        past = cache.get_seq_length() if cache is not None else 0
        positions = (torch.arange(seq, device=ids.device) + past)[None].expand(batch, -1)
        mask = build_attention_mask(None, past, seq, past + seq, batch, ids.device)
        position_embeddings = self.rotary_emb(h, positions)
        temperature = attention_temperature(positions, self.config.attn_temperature_len)
        for layer in self.layers:
            h = layer(h, position_embeddings, temperature, mask, cache, self.comm)
        h = self.norm(h)
        self.last_hidden = h  # replicated: every rank must hold the same one (the worker checks)
        logits = self.comm.all_gather(self.lm_head(h), "logits", batch * seq).float()
        return softcap(logits * self.config.output_multiplier_scale, self.config.final_logit_softcapping)

    @torch.no_grad()
    def greedy(self, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Greedy decoding with a KV cache (each rank caches only its own KV heads): the new token ids."""
        cache, out = DynamicCache(), []
        logits = self(ids, cache)
        for step in range(new_tokens):
            out.append(logits[:, -1].argmax(-1, keepdim=True))
            if step + 1 < new_tokens:
                logits = self(out[-1], cache)
        return torch.cat(out, dim=1) if out else ids[:, :0]


def _checkpoint_dtype(config: Grok2Config) -> torch.dtype:
    dtype = getattr(config, "dtype", None) or torch.float32
    return getattr(torch, dtype.removeprefix("torch.")) if isinstance(dtype, str) else dtype


def load_rank(folder: str | Path, tp_size: int, rank: int, comm: Collectives, naive: bool = False,
              device="cpu", dtype: torch.dtype | None = None) -> tuple[TensorParallelGrok2, dict[str, int]]:
    """Rank `rank`'s share of the released checkpoint in `folder`: the model and {file: bytes read}."""
    config = Grok2Config.from_pretrained(folder)
    shard = rank_shard(config, tp_size, rank, slice_count(folder, config), naive=naive)
    reader = RankReader(rank_files(folder, shard))
    try:
        dtype = dtype or _checkpoint_dtype(config)
        model = TensorParallelGrok2(config, reader, shard, comm, device, dtype)
    finally:
        reader.close()
    return model, dict(reader.bytes_read)


# ------------------------------------------------------------------------------------------------ under torchrun


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def parse_plan(text: str, world: int) -> tuple[int, list[list[str]]]:
    """"4:naive,correct" on 8 processes -> (4, [["naive"], ["correct"]]): the TP size, and what each group of that many
    consecutive ranks runs (one mode per group, side by side; or one group running each mode in turn)."""
    size, _, modes_text = text.partition(":")
    modes = [m.strip() for m in (modes_text or "correct").split(",") if m.strip()]
    if not size.strip().isdigit() or set(modes) - {"correct", "naive"} or not modes:
        raise ValueError(f"--plan {text!r}: write TP:MODES, e.g. 8:correct or 4:naive,correct")
    tp = int(size)
    if tp < 1 or world % tp:
        raise ValueError(f"--plan {text!r}: {world} processes cannot form groups of {tp} ranks")
    groups = world // tp
    if len(modes) == groups:
        return tp, [[mode] for mode in modes]
    if groups == 1:
        return tp, [modes]
    raise ValueError(f"--plan {text!r}: {groups} groups of {tp} ranks need {groups} modes, one each")


def _run_group(args, tp: int, mode: str, local: int, group, ids: torch.Tensor, device) -> dict:
    """Load this rank's share (rank `local` of `tp`, correct or naive), run the forward pass and greedy decoding."""
    comm = Collectives(group)
    started = time.perf_counter()
    model, read = load_rank(args.checkpoint, tp, local, comm, naive=mode == "naive", device=device)
    loaded = time.perf_counter()
    logits = model(ids)
    forward_sent = list(comm.sent)
    tokens = model.greedy(ids, args.new_tokens) if args.new_tokens else None
    finished = time.perf_counter()
    hidden = [model.last_hidden]
    if tp > 1:  # a check, not part of the model: are the replicated activations really the same on every rank?
        hidden = [torch.empty_like(model.last_hidden) for _ in range(tp)]
        dist.all_gather(hidden, model.last_hidden.contiguous(), group=group)
    record = {"key": f"{tp}:{mode}", "rank": local, "global_rank": dist.get_rank() if dist.is_initialized() else 0,
              "files": read, "bytes_read": sum(read.values()),
              "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
              "load_seconds": loaded - started, "run_seconds": finished - loaded,
              "process_cpu_seconds": time.process_time()}  # since the process started: imports included
    if local == 0:  # what the group computed: identical on its ranks, so its rank 0 reports it
        record.update(logits=logits.cpu(), tokens=None if tokens is None else tokens.cpu(), collectives=forward_sent,
                      tokens_in_forward=ids.numel(), replicas_identical=all(torch.equal(h, hidden[0]) for h in hidden))
    return record


def _report(records: list[dict], backend: str, device, slices: int, world: int) -> tuple[dict, dict]:
    """Rank 0: every rank's records -> the JSON report and the tensors, one entry per (TP size, mode)."""
    runs, tensors = {}, {}
    for record in sorted(records, key=lambda r: (r["key"], r["rank"])):
        tp, mode = record["key"].split(":")
        run = runs.setdefault(record["key"], {"tp_size": int(tp), "mode": mode, "ranks": []})
        if "logits" in record:
            tensors[f"tp{tp}.{mode}.logits"] = record.pop("logits").contiguous()
            generated = record.pop("tokens")
            if generated is not None:
                tensors[f"tp{tp}.{mode}.tokens"] = generated.contiguous()
            for key in ("collectives", "tokens_in_forward", "replicas_identical"):
                run[key] = record.pop(key)
        run["ranks"].append(record)
    return {"processes": world, "backend": backend, "device": device.type, "slices": slices, "runs": runs}, tensors


def main(argv: list[str] | None = None) -> int:
    """One rank of `torchrun --nproc-per-node N -m helpers.grok2.tensor_parallel --checkpoint DIR --inputs FILE
    --output DIR [--plan TP:MODES ...]`: read this rank's files, run the inputs, and (rank 0) write the logits and a
    JSON report (files and bytes each rank read, what was sent) to DIR."""
    parser = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m helpers.grok2.tensor_parallel",
                                     description="Tensor-parallel Grok 2 from the released TP-sliced files.")
    parser.add_argument("--checkpoint", required=True, help="a folder in the released layout")
    parser.add_argument("--inputs", required=True, help="a safetensors file holding `input_ids` [batch, seq]")
    parser.add_argument("--output", required=True, help="folder for logits.safetensors and report.json")
    parser.add_argument("--plan", action="append", help="TP:MODES, repeatable (default N:correct). Modes: correct; "
                        "naive (rank r reads TP-00r only). 4:naive,correct on 8 processes: two groups of 4, side by side")
    parser.add_argument("--new-tokens", type=int, default=0, help="also decode this many tokens greedily")
    parser.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds after which a rank exits, whatever")
    args = parser.parse_args(argv)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        plans = [parse_plan(text, world) for text in args.plan or [f"{world}:correct"]]
    except ValueError as error:
        parser.error(str(error))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"rank-{rank}.pid").write_text(str(os.getpid()))
    watchdog = threading.Timer(args.deadline, os._exit, (124,))  # never outlive the deadline, even if a peer hangs
    watchdog.daemon = True
    watchdog.start()
    # Every rank checks the whole plan (by file names, and one slice file's header) before joining: all refuse a bad
    # size or a missing file with the same message, instead of one rank failing and the others waiting for it.
    config = Grok2Config.from_pretrained(args.checkpoint)
    slices = slice_count(args.checkpoint, config)
    for tp, per_group in plans:
        for mode in {m for modes in per_group for m in modes}:
            for other in range(tp):
                rank_files(args.checkpoint, rank_shard(config, tp, other, slices, naive=mode == "naive"))
    backend = args.backend
    if backend == "auto":  # gloo is the path verified (on CPU); the NCCL branch has not yet run on GPUs
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world else "gloo"
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=args.deadline))
    try:
        ids = load_file(args.inputs)["input_ids"].to(device)
        mine = []
        for tp, per_group in plans:
            # every rank creates every group, in the same order (torch.distributed's rule), then uses its own
            groups = [dist.new_group(list(range(g * tp, (g + 1) * tp))) for g in range(world // tp)] if tp < world \
                else [None]
            for mode in per_group[rank // tp]:
                mine.append(_run_group(args, tp, mode, rank % tp, groups[rank // tp], ids, device))
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        if rank == 0:
            report, tensors = _report([r for records in everyone for r in records], backend, device, slices, world)
            _write_atomically(output / "logits.safetensors", lambda tmp: save_file(tensors, tmp))
            _write_atomically(output / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
        dist.barrier()
    finally:
        dist.destroy_process_group()
        watchdog.cancel()
    return 0


__all__ = ["TensorParallelError", "MissingShardError", "check_tensor_parallel", "RankShard", "rank_shard",
           "slice_count", "rank_files", "RankReader", "Collectives", "TensorParallelGrok2", "load_rank", "parse_plan",
           "main"]


if __name__ == "__main__":
    sys.exit(main())
