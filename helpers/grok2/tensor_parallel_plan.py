"""Who owns what under tensor parallelism for Grok 2, and which files a rank reads: the split's arithmetic (query and
KV heads, o_proj columns, MLP rows, vocabulary rows, expert slice files per rank), the checks that refuse a size that
cannot be exact, and a reader that opens only a rank's own files and counts the bytes it takes from each.

`helpers.grok2.tensor_parallel` builds and runs a rank's model from these; its docstring says why each part is split
the way it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .checkpoint import RELEASED_FILE_CONTENTS, SHARD_NAME, TENSOR_PARALLEL_FILES, expert_split_dim
from .configuration_grok2 import Grok2Config


class TensorParallelError(ValueError):
    """A tensor-parallel size the model or its files cannot be split into. `str()` reads: the constraint, then Fix."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}\nFix: {fix}")


class MissingShardError(FileNotFoundError):
    """A file of the released layout that a rank must read is not there. `str()` names the file, then Fix."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}\nFix: {fix}")


# ------------------------------------------------------------------------------------------------ the plan


def _divides_or_multiple(count: int, tp_size: int) -> bool:
    return count % tp_size == 0 or tp_size % count == 0


def _unsplittable(config: Grok2Config, tp_size: int, slices: int) -> list[str]:
    """The parts of the model (or of its files) that `tp_size` ranks cannot share exactly."""
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    parts = [
        (_divides_or_multiple(heads, tp_size),
         f"the {heads} attention heads (N must divide them, each rank taking whole heads, or be a multiple of them, "
         f"ranks sharing a head)"),
        (_divides_or_multiple(kv_heads, tp_size),
         f"the {kv_heads} key/value heads (N must divide them, or be a multiple of them, ranks sharing a KV head)"),
        # o_proj is row-parallel: each rank needs an equal block of its input columns, inside the heads it computed.
        # Where ranks share a head, the block is a part of one head, so heads x head_dim must split N ways exactly.
        ((heads * head_dim) % tp_size == 0,
         f"o_proj's {heads * head_dim} input columns ({heads} heads x {head_dim}) into {tp_size} equal blocks"),
        (config.intermediate_size % tp_size == 0, f"the dense MLP's width {config.intermediate_size}"),
        (config.vocab_size % tp_size == 0, f"the vocabulary of {config.vocab_size} tokens"),
        (config.moe_intermediate_size % slices == 0,
         f"the experts: their width {config.moe_intermediate_size} is no whole number of {slices} slice files"),
        (slices % tp_size == 0, f"the {slices} expert slice files (each rank concatenates {slices}/N whole files; "
                                f"at N > {slices} some ranks would find no file, which is how SGLang fails at TP 16)"),
    ]
    return [what for ok, what in parts if not ok]


def check_tensor_parallel(config: Grok2Config, tp_size: int, slices: int) -> None:
    """Refuse a split that cannot be exact, naming the constraint; `slices` is how many TP-00N files the release has."""
    fitting = [n for n in range(1, slices + 1) if slices % n == 0 and not _unsplittable(config, n, slices)]
    fix = (f"use a size that fits every part of this checkpoint: {', '.join(map(str, fitting))}; or re-slice the files "
           f"with helpers.grok2.save_in_released_layout(model, folder, tp_size=N).") if fitting else (
        "pull the expert slice files again (git lfs pull --include 'pytorch_model-0000[678]-TP-*', lesson 01).")
    if not isinstance(tp_size, int) or isinstance(tp_size, bool) or tp_size < 1:
        raise TensorParallelError(f"The tensor-parallel size must be a whole number >= 1, not {tp_size!r}.", fix)
    problems = _unsplittable(config, tp_size, slices)
    if problems:
        raise TensorParallelError(f"Tensor parallelism {tp_size} cannot split {problems[0]}.", fix)


@dataclass(frozen=True)
class RankShard:
    """What rank `rank` of `tp_size` owns. Ranges are [start, stop) in the full model's numbering."""

    tp_size: int
    rank: int
    q_heads: tuple[int, int]
    kv_heads: tuple[int, int]
    o_columns: tuple[int, int]  # o_proj's input columns (row-parallel): heads * head_dim / N of them
    mlp_rows: tuple[int, int]  # rows of gate_proj/up_proj = columns of down_proj
    vocab_rows: tuple[int, int]  # rows of embed_tokens and lm_head
    slice_files: tuple[int, ...]  # the TP-00N files whose expert slices this rank concatenates
    slices: int  # how many TP-00N files the release has (8 for xai-org/grok-2)
    naive: bool = False  # True: only TP-{rank}, as a loader globbing "*-TP-{rank:03d}" finds (wrong when N < slices)


def _heads_of(rank: int, tp_size: int, heads: int) -> tuple[int, int]:
    if tp_size <= heads:
        per = heads // tp_size
        return rank * per, (rank + 1) * per
    shared_by = tp_size // heads  # more ranks than heads: `shared_by` ranks compute the same head
    return rank // shared_by, rank // shared_by + 1


def rank_shard(config: Grok2Config, tp_size: int, rank: int, slices: int, naive: bool = False) -> RankShard:
    check_tensor_parallel(config, tp_size, slices)
    if not 0 <= rank < tp_size:
        raise ValueError(f"rank {rank} is outside 0..{tp_size - 1}")
    columns = config.num_attention_heads * config.head_dim // tp_size
    mlp = config.intermediate_size // tp_size
    vocab = config.vocab_size // tp_size
    per_rank = slices // tp_size
    files = (rank,) if naive else tuple(range(rank * per_rank, (rank + 1) * per_rank))
    return RankShard(tp_size, rank, _heads_of(rank, tp_size, config.num_attention_heads),
                     _heads_of(rank, tp_size, config.num_key_value_heads), (rank * columns, (rank + 1) * columns),
                     (rank * mlp, (rank + 1) * mlp), (rank * vocab, (rank + 1) * vocab), files, slices, naive)


# ------------------------------------------------------------------------------------------------ the files


def slice_count(folder: str | Path, config: Grok2Config | None = None) -> int:
    """How many TP-00N files the release cut the experts into (8 for xai-org/grok-2): the experts' width in the config
    (`moe_intermediate_size`) over the width of one slice, read from the header of the first slice file found. So a
    missing last file (TP-007) is still counted, and `rank_files` then names it; the file names alone would not."""
    folder = Path(folder)
    found = sorted((int(m.group(2)), int(m.group(1)), p) for p in folder.glob("pytorch_model-*-TP-*.safetensors")
                   if (m := SHARD_NAME.match(p.name)) and m.group(2) != "common")
    if not found:
        raise MissingShardError(f"{folder} holds no expert slice files (pytorch_model-00006-TP-000.safetensors ...).",
                                "point at a folder in the released layout (helpers.grok2.save_in_released_layout "
                                "writes one), with its weights pulled (git lfs pull).")
    config = config or Grok2Config.from_pretrained(folder)
    path = found[0][2]
    try:
        with safe_open(path, framework="pt") as handle:  # the header only: names and shapes, no tensor data
            name = next(iter(handle.keys()), None)
            width = handle.get_slice(name).get_shape()[expert_split_dim(name)] if name else 0
    except (SafetensorError, OSError) as error:  # a Git LFS pointer, a damaged file: a rank would die on it
        raise MissingShardError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error}); "
                                f"a Git LFS pointer not pulled yet?",
                                pull_fix([path.name])) from None
    if not width or config.moe_intermediate_size % width:
        raise MissingShardError(f"{path} holds expert slices {width} wide, which do not divide the experts' width "
                                f"{config.moe_intermediate_size} in {folder / 'config.json'}: the files and the config "
                                f"are not from one checkpoint.",
                                "keep the config.json that came with these files, or write the folder again with "
                                "helpers.grok2.save_in_released_layout(model, folder).")
    return config.moe_intermediate_size // width


NAMED_FILES = 6  # files named one by one in a message about missing or unpulled weight files; past that, a count


def name_files(names: list[str]) -> str:
    """The files for a message: all of them, or the first NAMED_FILES and how many more."""
    more = len(names) - NAMED_FILES
    return ", ".join(names[:NAMED_FILES]) + (f" and {more} more" if more > 0 else "")


def pull_fix(names: list[str]) -> str:
    """The fix for weight files missing or still Git LFS pointers: the `git lfs pull --include` that fetches them, by
    name, or past NAMED_FILES every slice file's pattern (git-lfs skips the ones already there)."""
    include = ",".join(names) if len(names) <= NAMED_FILES else "pytorch_model-*-TP-*.safetensors"
    return f"pull {'it' if len(names) == 1 else 'them'} in that folder: git lfs pull --include '{include}' (lesson 01)."


def rank_files(folder: str | Path, shard: RankShard) -> list[Path]:
    """The files this rank opens: every TP-common file and its own slice files. Each must exist (checked by name)."""
    folder = Path(folder)
    names = [f"pytorch_model-{n:05d}-TP-common.safetensors" for n in RELEASED_FILE_CONTENTS if n not in TENSOR_PARALLEL_FILES]
    names += [f"pytorch_model-{n:05d}-TP-{s:03d}.safetensors" for n in TENSOR_PARALLEL_FILES for s in shard.slice_files]
    missing = [name for name in names if not (folder / name).is_file()]
    if len(missing) == 1:
        raise MissingShardError(f"{folder / missing[0]} is missing: rank {shard.rank} of tensor parallelism "
                                f"{shard.tp_size} must read it.", pull_fix(missing))
    if missing:
        raise MissingShardError(f"{len(missing)} files are missing from {folder}: {name_files(missing)}; rank "
                                f"{shard.rank} of tensor parallelism {shard.tp_size} must read them.",
                                pull_fix(missing))
    return [folder / name for name in names]


class RankReader:
    """Opens only the files it is given and records, per file, the tensor bytes it read (safetensors maps the file
    and copies only the requested rows or columns; each file's small JSON header is read too and not counted)."""

    def __init__(self, files: list[Path]):
        self._handles = {path.name: safe_open(path, framework="pt") for path in files}
        self._where: dict[str, list[str]] = {}
        for file, handle in self._handles.items():
            for name in handle.keys():
                self._where.setdefault(name, []).append(file)
        self.bytes_read: dict[str, int] = {file: 0 for file in self._handles}

    def _take(self, file: str, name: str, dim: int | None, start: int | None, stop: int | None) -> torch.Tensor:
        piece = self._handles[file].get_slice(name)
        if dim is None:
            tensor = piece[:]
        elif dim == 0:
            tensor = piece[start:stop]
        else:
            tensor = piece[:, start:stop]
        self.bytes_read[file] += tensor.numel() * tensor.element_size()
        return tensor

    def read(self, name: str, dim: int | None = None, span: tuple[int, int] | None = None) -> torch.Tensor:
        """A tensor from the one file that holds it, whole or only rows/columns `span` along `dim`."""
        (file,) = self._where[name]
        return self._take(file, name, dim, *(span or (None, None)))

    def read_slices(self, name: str, dim: int) -> torch.Tensor:
        """An expert weight from this rank's slice files, concatenated in file order along `dim`."""
        return torch.cat([self._take(file, name, None, None, None) for file in sorted(self._where[name])], dim=dim)

    def close(self) -> None:
        self._handles.clear()


__all__ = ["TensorParallelError", "MissingShardError", "check_tensor_parallel", "RankShard", "rank_shard",
           "slice_count", "rank_files", "RankReader"]
