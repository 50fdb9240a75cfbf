"""The checks of lesson 01's three exercises:
download: the disk a git-lfs pull needs, choosing LFS files, one tensor-parallel rank's files."""

from __future__ import annotations

from ..units import GB, TB
from .checking import Result, fail, grok_plan, not_attempted, number, passed


STARTER_DISKS_TB = (1, 2, 4)  # the question's choices, in decimal terabytes


def _disk_guard_margin() -> float:
    """The margin `download.pull` adds to the bytes it needs (the default of `download.ensure_disk_space`)."""
    import inspect

    from ..download import ensure_disk_space

    return inspect.signature(ensure_disk_space).parameters["margin"].default


def check_01_starter(smallest_disk_tb) -> Result:
    """The smallest of 1, 2 and 4 TB disks on which `download.pull` agrees to fetch all of Grok 2.5 with git-lfs."""
    ex = "01 starter"
    if smallest_disk_tb is None:
        return not_attempted(ex, "Set `smallest_disk_tb` to 1, 2 or 4: git-lfs keeps two copies of grok_bytes, and "
                                  "the disk guard adds 5%.")
    answer = number(ex, "smallest_disk_tb", smallest_disk_tb)
    grok_bytes = grok_plan().weight_bytes("bf16")
    margin = _disk_guard_margin()
    needed = 2 * grok_bytes * margin
    expected = min(d for d in STARTER_DISKS_TB if d * TB >= needed)
    if answer not in STARTER_DISKS_TB:
        fail(ex, f"choose one of {STARTER_DISKS_TB} (terabytes, 10^12 bytes).")
    if answer == expected:
        return passed(ex, f"{answer:g} TB: two copies of {grok_bytes / GB:,.1f} GB plus {margin - 1:.0%} = {needed / TB:.2f} TB "
                           "(hf download --local-dir keeps one copy: section 9).")
    if answer * TB >= needed:
        fail(ex, f"{answer:g} TB is enough, but a smaller one of the choices is too.")
    if answer * TB >= grok_bytes:
        fail(ex, f"one copy of the weights fits in {answer:g} TB, but git-lfs keeps two: the object in .git/lfs/objects "
                  "and the file you use.")
    fail(ex, f"{answer:g} TB cannot hold even one copy of {grok_bytes / GB:,.1f} GB.")


def check_01_practitioner(selected, manifest) -> Result:
    """Which LFS files `git lfs pull --include "*.safetensors" --exclude <largest shard>` fetches."""
    ex = "01 practitioner"
    if selected is None:
        return not_attempted(ex, "Set `selected` with download.select(manifest, include=[...], exclude=[...]).")
    if isinstance(selected, (str, bytes)) or not hasattr(selected, "__iter__"):
        fail(ex, f"`selected` should be a list of paths, got {type(selected).__name__}.")
    chosen = set(selected)
    shards = sorted((p for p in manifest if p.endswith(".safetensors")), key=lambda p: manifest[p].size)
    if not shards:
        fail(ex, "this manifest has no .safetensors files; pass the `manifest` of section 1.")
    largest, expected = shards[-1], set(shards[:-1])
    if chosen == expected:
        return passed(ex, f"{len(chosen)} of {len(shards)} shards, {largest} left out.")
    if largest in chosen:
        fail(ex, f"the largest shard ({largest}, {manifest[largest].size:,} bytes) is still selected: exclude it.")
    if any(not p.endswith(".safetensors") for p in chosen):
        fail(ex, f"non-weight files selected: {sorted(p for p in chosen if not p.endswith('.safetensors'))}.")
    if chosen - set(manifest):
        fail(ex, f"not in the manifest: {sorted(chosen - set(manifest))[:3]}.")
    fail(ex, f"{len(expected - chosen)} shard(s) that should be fetched are missing, e.g. "
              f"{sorted(expected - chosen)[0]}.")


def check_01_expert(files_for_rank, sizes) -> Result:
    """`files_for_rank(names, rank)`: the files GPU rank r of an 8-GPU SGLang server reads (TP-common + its own)."""
    ex = "01 expert"
    if files_for_rank is None:
        return not_attempted(ex, "Define `def files_for_rank(names, rank): ...` returning the file names rank "
                                  "`rank` reads.")
    if not callable(files_for_rank):
        fail(ex, f"`files_for_rank` should be a function (def files_for_rank(names, rank): ...), got "
                  f"{type(files_for_rank).__name__}.")
    from ..download import tensor_parallel_layout

    layout = tensor_parallel_layout(sizes)
    names = list(sizes)
    union = set()
    for rank in range(layout["ranks"]):
        try:
            mine = files_for_rank(list(names), rank)
        except Exception as error:  # noqa: BLE001 - the learner's code
            fail(ex, f"files_for_rank(names, {rank}) raised {type(error).__name__}: {error}")
        if mine is None:
            fail(ex, f"files_for_rank(names, {rank}) returned None: return the list of file names.")
        mine = list(mine)
        if len(set(mine)) != len(mine):
            fail(ex, f"rank {rank}: some files are listed twice.")
        stray = [n for n in mine if n not in sizes]
        if stray:
            fail(ex, f"rank {rank}: names that are not in `names`: {stray[:3]}.")
        want_files = layout["common_files"] + layout["files_per_rank"][rank]
        want_bytes = layout["common_bytes"] + layout["bytes_per_rank"][rank]
        if len(mine) != want_files or sum(sizes[n] for n in mine) != want_bytes:
            common = [n for n in mine if n.endswith("-TP-common.safetensors")]
            fail(ex, f"rank {rank} got {len(mine)} files ({len(common)} TP-common); it should read "
                      f"{layout['common_files']} TP-common + {layout['files_per_rank'][rank]} of its own "
                      f"(names ending -TP-{rank:03d}.safetensors).")
        union.update(mine)
    if union != set(sizes):
        fail(ex, f"together the ranks miss {len(set(sizes) - union)} file(s), e.g. {sorted(set(sizes) - union)[0]}.")
    return passed(ex, f"every rank reads {layout['common_files']} TP-common files plus its own; together the "
                       f"{layout['ranks']} ranks read all {len(sizes)} files.")
