"""`load_model` / `load_tokenizer`: one call that loads the profile's model correctly on whatever hardware is here.

What it decides for you, and prints so you can see it:
* dtype: bf16 on GPUs that have it (compute capability >= 8.0), fp16 on older GPUs (T4 = 7.5) and Apple MPS,
  fp32 on CPU when it fits in RAM (CPUs are slow at bf16 matmuls) and bf16 when it does not;
* placement: one GPU, several GPUs (`device_map="auto"` with a `max_memory` that leaves room for the KV cache), or
  GPUs plus CPU offload - and a clear refusal *before* downloading anything when the model cannot fit at all, saying
  how much is needed, how much there is, and what would fit;
* safety: safetensors only, `trust_remote_code=False`.

It also catches the classic failures early: an LFS pointer file where weights should be, a truncated or damaged
safetensors file (named, with the fix), a folder with no config, an unknown hub id; and without a network it says so in
one line, within seconds (`helpers.network`), instead of retrying the hub for half a minute. `load_model(folder,
verify=True)` checks every LFS file of a clone against its sha256 first; by default (verify="auto") a git-LFS clone is
checked as far as that is cheap (`check_checksums_if_cheap`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig

from . import grok2  # noqa: F401  (registers Grok 2 with the Auto classes)
from .grok2.checkpoint import is_released_layout, load_released_checkpoint
from .grok2.tokenization_grok2 import tokenizer_from_tok_json
from .errors import CourseError
from .hardware import compute_dtype
from .memory import GPU_USABLE_FRACTION, RAM_USABLE_FRACTION, MemoryPlan, plan_memory
from .network import hub_offline_reason, say_once
from .units import GB, format_bytes
from .paths import GROK2_RELEASED_CONFIG
from .profiles import resolve_source, resolve_tokenizer_source  # noqa: F401  (importable from here too)
from .quantization import QUANTIZATION_PRECISION, quantization_config

RELEASED_GROK2_ID = "xai-org/grok-2"
RELEASED_TENSOR_PARALLELISM = 8  # the released files are pre-sharded for 8 ranks (SGLang --tp 8; lessons 01 and 06)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class LoadPlan:
    """What load_model decided, and why (shown in the lessons). `source` and `tokenizer_source` are resolved once,
    here: load_model, load_tokenizer and the server all load what the plan names."""

    source: str
    dtype: torch.dtype
    quantization: str | None
    device_map: str | dict | None
    max_memory: dict | None
    weight_bytes: float
    reason: str
    tokenizer_source: str | None = None


# ------------------------------------------------------------------------------------------------------- sources


def is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def check_local_folder(folder: Path) -> None:
    """Refuse folders that cannot hold a loadable model, with the fix."""
    from .download import find_lfs_pointers

    if not folder.is_dir():
        raise CourseError(f"{folder} is a file, not a model folder.", "Pass the folder that contains config.json.")
    if not (folder / "config.json").exists():
        raise CourseError(
            f"No config.json in {folder}.",
            "Pass the model's folder (the one with config.json and the *.safetensors files); "
            "if you cloned with GIT_LFS_SKIP_SMUDGE=1, run `git lfs pull --include config.json` there (lesson 01).",
        )
    pointers = find_lfs_pointers(folder)
    if pointers:
        names = ", ".join(p.name for p in pointers[:5]) + (" ..." if len(pointers) > 5 else "")
        raise CourseError(
            f"{len(pointers)} file(s) in {folder} are Git LFS pointers, not the real data: {names}. "
            "Loading them would fail with an obscure error such as safetensors' HeaderTooLarge.",
            f"Fetch the real files: `cd {folder} && git lfs pull` (install git-lfs first: lesson 01), "
            "or download with `hf download` instead of git.",
        )


def load_config(source: str) -> PreTrainedConfig:
    """The model's config, from a folder or the hub (one small file), with errors that name the fix."""
    if is_local(source):
        folder = Path(source).expanduser()
        check_local_folder(folder)
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    if not HUB_ID.match(source):
        raise CourseError(
            f"{source!r} is neither an existing folder nor a hub id of the form 'organisation/name'.",
            "Check the path (relative paths start from the notebook's folder), or pass a hub id like "
            "'ibm-granite/granite-3.1-3b-a800m-instruct'.",
        )
    offline = hub_offline_reason()
    try:  # offline: the local hub cache only (a model downloaded before still works), no retries
        return AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=offline is not None)
    except (OSError, ValueError) as error:
        if source == RELEASED_GROK2_ID:
            # Planning needs only the config, and the course ships the released one: plan without the network.
            why = f"offline: {offline}" if offline else f"the hub did not answer: {str(error).splitlines()[0][:120]}"
            say_once(f"{source}: using the course's copy of its config.json ({GROK2_RELEASED_CONFIG.name} in data/; "
                     f"{why}).")
            return AutoConfig.from_pretrained(GROK2_RELEASED_CONFIG)
        raise CourseError(
            f"Could not read the config of {source!r} from the Hugging Face hub ("
            + (f"offline: {offline}; not in the local cache either" if offline else
               f"{type(error).__name__}: {str(error).splitlines()[0][:200]}") + ").",
            "Check the id (it is case-sensitive) on huggingface.co; connect to the internet (and unset "
            "HF_HUB_OFFLINE); for a gated model accept its licence on its hub page and run `hf auth login`; "
            "or use the offline profile: GROK2_COURSE_PROFILE=tiny.",
        ) from error


# ----------------------------------------------------------------------------------------------------- planning


def choose_dtype(dtype, hardware, plan: MemoryPlan) -> torch.dtype:
    if dtype not in (None, "auto"):
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if hardware.device in ("cuda", "mps"):  # bf16 on GPUs that all have it, else fp16 (helpers.hardware's rule)
        return compute_dtype(hardware.device, bf16=hardware.supports_bf16)
    fits_fp32 = plan.weight_bytes("fp32") < RAM_USABLE_FRACTION * hardware.ram_available_bytes / 2
    return torch.float32 if fits_fp32 else torch.bfloat16


def _precision_name(dtype: torch.dtype, quantization: str | None) -> str:
    if quantization:
        return QUANTIZATION_PRECISION[quantization]
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def is_released_grok2(name: str) -> bool:
    """xai-org/grok-2 itself, or a folder holding its released (pre-sharded, TP-*) files."""
    return name == RELEASED_GROK2_ID or (is_local(name) and is_released_layout(Path(name).expanduser()))


def what_would_fit(plan: MemoryPlan, budget_bytes: float) -> str:
    """A sentence for the error message: the cheapest precision that fits, else how many 80 GB GPUs it takes."""
    options = (("bf16", 'dtype="bfloat16"'), ("int8", 'quantization="int8"'), ("nf4", 'quantization="nf4"'))
    for precision, argument in options:
        if plan.weight_bytes(precision) <= budget_bytes:
            return f"It would fit here in {precision} ({format_bytes(plan.weight_bytes(precision))}): pass {argument}"
    from .accelerators import H100_SXM  # an "80 GB" GPU holds 80 GiB

    gpus = plan.gpus_needed(H100_SXM.memory_bytes, "bf16")
    gpus_fp8 = plan.gpus_needed(H100_SXM.memory_bytes, "fp8")
    smaller = "or use a smaller profile: GROK2_COURSE_PROFILE=small (one T4) or tiny (any CPU)"
    if is_released_grok2(plan.model_name):
        tp = RELEASED_TENSOR_PARALLELISM
        return (f"Even 4-bit needs {format_bytes(plan.weight_bytes('nf4'))}. By memory alone the weights fill about "
                f"{gpus} x 80 GB GPUs in bf16 ({gpus_fp8} in FP8), but the released files are pre-sharded for tensor "
                f"parallelism {tp}: the official way is SGLang on {tp} GPUs of more than 40 GB each, in FP8 "
                f"(--tp {tp}, lesson 06); {smaller}")
    return (
        f"Even 4-bit needs {format_bytes(plan.weight_bytes('nf4'))}. It needs about {gpus} x 80 GB GPUs in bf16 or "
        f"{gpus_fp8} in FP8 (served with SGLang/vLLM at tensor parallelism {plan.tensor_parallel_size(gpus_fp8)}+); "
        f"{smaller}"
    )


def plan_placement(
    plan: MemoryPlan, hardware, dtype: torch.dtype, quantization: str | None, device_map, max_memory
) -> LoadPlan:
    """Decide device_map / max_memory, or refuse with numbers."""
    precision = _precision_name(dtype, quantization)
    weights = plan.weight_bytes(precision)
    ram = hardware.ram_available_bytes * RAM_USABLE_FRACTION
    if device_map not in (None, "auto") or max_memory is not None:
        return LoadPlan(plan.model_name, dtype, quantization, device_map, max_memory, weights, "as requested")

    if hardware.device == "cuda":
        budgets = {i: int(g.free_bytes * GPU_USABLE_FRACTION) for i, g in enumerate(hardware.gpus)}
        gpu_total = sum(budgets.values())
        if weights <= budgets[0]:
            return LoadPlan(plan.model_name, dtype, quantization, {"": 0}, None, weights, "fits on GPU 0")
        if weights <= gpu_total:
            reason = f"spread over {len(budgets)} GPUs"
            return LoadPlan(plan.model_name, dtype, quantization, "auto", budgets, weights, reason)
        if weights <= gpu_total + ram:
            budgets_cpu = {**budgets, "cpu": int(ram)}
            reason = "GPUs + CPU offload (works, but every forward pass copies the offloaded layers: slow)"
            return LoadPlan(plan.model_name, dtype, quantization, "auto", budgets_cpu, weights, reason)
        have = f"{len(budgets)} GPU(s) with {format_bytes(gpu_total)} usable + {format_bytes(ram)} of RAM"
        budget = gpu_total + ram
    else:
        if weights <= ram:
            where = "Apple GPU (MPS)" if hardware.device == "mps" else "CPU"
            device_map = {"": "mps"} if hardware.device == "mps" else None
            return LoadPlan(plan.model_name, dtype, quantization, device_map, None, weights, f"fits in RAM, runs on {where}")
        have = f"no CUDA GPU and {format_bytes(ram)} of usable RAM"
        budget = ram
    raise CourseError(
        f"{plan.model_name} does not fit: its weights need {format_bytes(weights)} in {precision} "
        f"({plan.total_params / 1e9:,.1f}B parameters), and this machine has {have}.",
        f"Nothing was downloaded. {what_would_fit(plan, budget)}.",
    )


# -------------------------------------------------------------------------------------------------- entry points


def plan_load(
    name_or_path: str | Path | None = None,
    *,
    profile: str | None = None,
    dtype="auto",
    quantization: str | None = None,
    device_map="auto",
    max_memory: dict | None = None,
) -> LoadPlan:
    """Everything load_model decides, without loading anything (only the config is read)."""
    from .hardware import hardware_summary

    source = resolve_source(name_or_path, profile)
    config = load_config(source)
    plan = plan_memory(config, name=source)
    hardware = hardware_summary()
    chosen_dtype = choose_dtype(dtype, hardware, plan)
    placement = plan_placement(plan, hardware, chosen_dtype, quantization, device_map, max_memory)
    return replace(placement, tokenizer_source=resolve_tokenizer_source(name_or_path, profile))


def load_model(
    name_or_path: str | Path | None = None,
    *,
    profile: str | None = None,
    dtype="auto",
    quantization: str | None = None,
    device_map="auto",
    max_memory: dict | None = None,
    verbose: bool = True,
    plan: LoadPlan | None = None,
    verify: bool | str = "auto",
    **from_pretrained_kwargs,
):
    """Load a causal LM (the profile's by default) in eval mode, placed and typed for this machine.

    `plan`: a LoadPlan from `plan_load` (the other arguments are then ignored): load exactly what it decided.
    `verify`: for a git clone, check every LFS file against its pointer's sha256 first. True skips files that `pull`
    (or an earlier check) hashed and that are unchanged since (same size, times and inode); "full" hashes every byte.
    "auto" (the default) does the same as True for a git-LFS clone as long as at most AUTO_VERIFY_MAX_BYTES need hashing
    now, and otherwise says in one line that the bytes were not checked, and how to check them (see
    `check_checksums_if_cheap`); False checks no checksum. Whatever `verify` says, a local folder's safetensors files
    are checked for truncation and damaged headers."""
    placement = plan or plan_load(
        name_or_path, profile=profile, dtype=dtype, quantization=quantization, device_map=device_map, max_memory=max_memory
    )
    source = placement.source
    if verify == "auto":
        if is_local(source):
            check_checksums_if_cheap(Path(source).expanduser(), verbose=verbose)
    elif verify:
        check_checksums(Path(source).expanduser(), rehash=verify == "full")  # refuses what is not a clone
    if is_local(source):
        check_weight_files(Path(source).expanduser())
    if verbose:
        print(
            f"Loading {source}: {str(placement.dtype).removeprefix('torch.')}"
            f"{', ' + placement.quantization if placement.quantization else ''}, "
            f"{format_bytes(placement.weight_bytes)} of weights, {placement.reason}."
        )
    if is_local(source) and is_released_layout(source):
        try:
            return _load_released_layout(Path(source).expanduser(), placement)
        except SafetensorError as error:
            raise _damaged(source, Path(source).expanduser(), str(error)) from error
    kwargs = dict(
        dtype=placement.dtype,
        trust_remote_code=False,
        use_safetensors=True,
        quantization_config=quantization_config(placement.quantization, placement.dtype),
    )
    if placement.device_map is not None:
        kwargs["device_map"] = placement.device_map
    if placement.max_memory is not None:
        kwargs["max_memory"] = placement.max_memory
    if not is_local(source) and hub_offline_reason() is not None:
        kwargs["local_files_only"] = True  # offline: the local hub cache, at once, instead of minutes of retries
    kwargs.update(from_pretrained_kwargs)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except SafetensorError as error:  # a file the header check passed, or one in the hub cache
        raise _damaged(source, Path(source).expanduser() if is_local(source) else None, str(error)) from error
    except OSError as error:
        raise CourseError(
            f"Could not load the weights of {source!r} ({str(error).splitlines()[0][:300]}).",
            "Online: check the id and your connection (gated models need `hf auth login`). Offline: download first "
            "(lesson 01) and pass the local folder.",
        ) from error
    return model.eval()


# ----------------------------------------------------------------------------------------- damaged weight files


def _damaged(where: str | Path, folder: Path | None, what: str) -> CourseError:
    """The error for a damaged weight file (`where`: the file, else the folder or hub id): what is wrong, and how to get
    good bytes again."""
    if folder is not None and (folder / ".git").exists():
        fix = (f"see every damaged file with `download.verify({str(folder)!r})` (or `python -m helpers.download verify "
               f"{folder}`), then fetch them again with `download.pull({str(folder)!r})` (lesson 01): complete files "
               "are kept, damaged ones are checked out or downloaded again")
    else:
        fix = ("download that file again (`hf download <repo> <file> --local-dir <folder>` resumes and replaces it); "
               "to check a whole `hf download` folder: `download.verify(folder, manifest=download.hub_manifest(repo_id))`")
    return CourseError(f"{where} is damaged: {what}.", fix)


def check_weight_files(folder: Path) -> None:
    """Refuse a folder whose safetensors files are truncated or have damaged headers (reads the headers only)."""
    from .download import safetensors_problem

    for file in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            raise _damaged(file, folder, problem)


def check_checksums(folder: Path, rehash: bool = False) -> None:
    """Every LFS file of the clone `folder` against its pointer's sha256 (`load_model(verify=...)`)."""
    from .download import verified_cache, verify

    if not (folder / ".git").exists():
        raise CourseError(f"verify=True needs a git clone, whose pointers hold each file's sha256; {folder} is not one.",
                          "for files fetched with `hf download`, check them with `download.verify(folder, "
                          "manifest=download.hub_manifest(repo_id))`; or load without verify=True")
    cache = None if rehash else verified_cache(folder)
    bad = [state for state in verify(folder, cache=cache) if not state.ok]
    if bad:
        raise _damaged(folder / bad[0].path, folder, "; ".join(state.describe() for state in bad))


# load_model's default for a git-LFS clone: hash at most this many bytes that the verified cache cannot vouch for.
# Why check by default at all: a bit flipped among the tensor bytes passes every structural check and loads silently
# as a subtly different model. Why it is cheap: `pull` records every file it hashed (integrity.VerifiedCache), so a
# clone fetched with `pull` costs one stat per file, and a file changed since (a copy, an edit) is hashed again. Why a
# bound: a clone filled by a plain `git lfs pull` has never been hashed - for Grok 2.5 that is hundreds of GB through
# sha256 on one core before the load even starts - so past this much (tens of seconds of hashing) load_model says in
# one line what it did not check and how to check it, and loads.
AUTO_VERIFY_MAX_BYTES = 20 * GB


def check_checksums_if_cheap(folder: Path, max_bytes: float | None = None, verbose: bool = True) -> None:
    """`load_model(verify="auto")`: the downloaded LFS files of the clone `folder` against their pointers' sha256, where
    that costs at most `max_bytes` of hashing (files the verified cache vouches for cost a stat). Refuses a damaged
    file with the fix; prints one line when it checked nothing because more would need hashing. Not a clone, or no
    LFS file: nothing to check against (the safetensors headers are still checked)."""
    import subprocess

    from .download import file_state, lfs_manifest, verified_cache

    max_bytes = AUTO_VERIFY_MAX_BYTES if max_bytes is None else max_bytes
    if not (folder / ".git").exists():
        return
    how = (f"`load_model(..., verify=True)` or `python -m helpers.download verify {folder}` checks every byte, and "
           f"`download.pull({str(folder)!r})` re-fetches what is damaged")
    try:
        manifest = lfs_manifest(folder)
        cache = verified_cache(folder)
    except (CourseError, subprocess.CalledProcessError) as error:  # no git here, not a clone's top, no commit yet
        why = error.problem if isinstance(error, CourseError) else (error.stderr or "").strip()[:200]
        print(f"load_model: the LFS files of {folder} were not checked against their sha256 ({why}).")
        return
    quick = {p: file_state(folder, p, pointer, full_check=False) for p, pointer in manifest.items()}
    bad = [state for state in quick.values() if state.state == "size mismatch"]
    if bad:
        raise _damaged(folder / bad[0].path, folder, "; ".join(state.describe() for state in bad))
    present = [p for p, state in quick.items() if state.ok]  # pointers are refused earlier; a missing file is not ours
    todo = [p for p in present if not cache.hit(p, folder / p, manifest[p])]
    size = sum(manifest[p].size for p in todo)
    if size > max_bytes:
        print(f"load_model: {len(todo)} of the {len(present)} LFS files of {folder} ({format_bytes(size)}) were NOT "
              f"checked against their sha256: never hashed by `download.pull`, or changed since, and more than the "
              f"{format_bytes(max_bytes)} a load hashes by itself; {how}.")
        return
    bad = [state for state in (file_state(folder, p, manifest[p], cache=cache) for p in todo) if not state.ok]
    if bad:
        raise _damaged(folder / bad[0].path, folder, "; ".join(state.describe() for state in bad))
    if verbose and todo:
        print(f"Checked {len(present)} LFS files against their sha256: {len(todo)} hashed now "
              f"({format_bytes(size)}), the rest hashed before and unchanged since.")


def _load_released_layout(folder: Path, placement: LoadPlan):
    """xAI's pre-sharded files: stream them into the model (expert slices stitched, quantized on the fly if asked),
    no conversion on disk."""
    device_map = placement.device_map
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device_map = device_map[""]
    return load_released_checkpoint(folder, dtype=placement.dtype, device_map=device_map,
                                    max_memory=placement.max_memory,
                                    quantization_config=quantization_config(placement.quantization, placement.dtype))


def load_tokenizer(name_or_path: str | Path | None = None, *, profile: str | None = None, plan: LoadPlan | None = None):
    """The tokenizer that goes with the model, set up for generation (left padding, a pad token).

    `plan`: a LoadPlan from `plan_load` (the other arguments are then ignored): the tokenizer it resolved for its
    model, so that a caller that loads `load_model(plan=plan)` gets the matching tokenizer without resolving again."""
    if plan is not None:
        source = plan.tokenizer_source or plan.source
    else:
        source = resolve_tokenizer_source(name_or_path, profile)
    if is_local(source):
        from .download import find_lfs_pointers

        pointers = [p for p in find_lfs_pointers(Path(source)) if "token" in p.name]
        if pointers:
            raise CourseError(
                f"Tokenizer file(s) in {source} are Git LFS pointers: {', '.join(p.name for p in pointers)}.",
                f"Run `cd {source} && git lfs pull --include '*token*'` (lesson 01).",
            )
    folder = Path(source).expanduser()
    if is_local(source) and (folder / "tokenizer.tok.json").exists() and not (folder / "tokenizer.json").exists():
        # The hub's Grok 2 ships only the tiktoken file: convert it (same ids as tiktoken, Grok 2's chat template).
        return tokenizer_from_tok_json(folder / "tokenizer.tok.json")
    offline = not is_local(source) and hub_offline_reason() is not None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=offline)
    except (OSError, ValueError) as error:
        raise CourseError(
            f"Could not load the tokenizer {source!r} ("
            + (f"offline: {hub_offline_reason()}; not in the local cache either" if offline else
               str(error).splitlines()[0][:200]) + ").",
            "Check the id or folder; offline, use GROK2_COURSE_PROFILE=tiny or a downloaded folder.",
        ) from error
    # Decoder-only models continue from the last position: pad on the left so every prompt ends at the same place.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
