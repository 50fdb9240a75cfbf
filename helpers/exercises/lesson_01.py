"""The checks of lesson 01's three exercises:
download: download time, choosing LFS files, one tensor-parallel rank's files."""

from __future__ import annotations

import math

from ..units import GB
from .checking import Result, fail, grok_plan, not_attempted, number, passed


def check_01_starter(hours_at_250) -> Result:
    """Hours to download Grok 2.5's bf16 weights on a 250 Mb/s link."""
    ex = "01 starter"
    if hours_at_250 is None:
        return not_attempted(ex, "Set `hours_at_250` with download.download_seconds(grok_bytes, ...) / 3600.")
    hours = number(ex, "hours_at_250", hours_at_250)
    grok_bytes = grok_plan().weight_bytes("bf16")
    expected = grok_bytes * 8 / 250e6 / 3600
    if math.isclose(hours, expected, rel_tol=1e-6):
        return passed(ex, f"{hours:.2f} hours for {grok_bytes / GB:.0f} GB at 250 Mb/s (a link is quoted in bits "
                           "per second: 8 bits a byte).")
    if math.isclose(hours, expected / 8, rel_tol=1e-3):
        fail(ex, "8 times too short: links are quoted in *bits* per second, files in bytes.")
    if math.isclose(hours, expected * 3600, rel_tol=1e-3):
        fail(ex, "that is in seconds; the question asks for hours.")
    if math.isclose(hours, expected * 60, rel_tol=1e-3):
        fail(ex, "that is in minutes; the question asks for hours.")
    fail(ex, f"{hours:.3g} hours is not it. download_seconds takes bytes and bits per second (250 Mb/s = 250e6).")


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
