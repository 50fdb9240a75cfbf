"""`load_model` / `load_tokenizer`: one call that loads the profile's model correctly on whatever hardware is here.

What it decides for you, and prints so you can see it:
* dtype: bf16 on GPUs that have it (compute capability >= 8.0), fp16 on older GPUs (T4 = 7.5) and Apple MPS,
  fp32 on CPU when it fits in RAM (CPUs are slow at bf16 matmuls) and bf16 when it does not;
* placement: one GPU, several GPUs (`device_map="auto"` with a `max_memory` that leaves room for the KV cache), or
  GPUs plus CPU offload - and a clear refusal *before* downloading anything when the model cannot fit at all, saying
  how much is needed, how much there is, and what would fit;
* safety: safetensors only, `trust_remote_code=False`.

It also catches the classic failures early: an LFS pointer file where weights should be, a folder with no config, an
unknown or unreachable hub id while offline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig

from . import grok2  # noqa: F401  (registers Grok 2 with the Auto classes)
from .grok2.checkpoint import is_released_layout, load_released_checkpoint
from .grok2.tokenization_grok2 import tokenizer_from_tok_json
from .errors import CourseError
from .memory import MemoryPlan, plan_memory
from .units import GB, format_bytes
from .paths import GROK2_RELEASED_CONFIG
from .profiles import get_profile
from .quantization import QUANTIZATION_PRECISION, quantization_config

RELEASED_GROK2_ID = "xai-org/grok-2"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Room kept free on each GPU for activations and the KV cache of a few thousand tokens.
GPU_HEADROOM_FRACTION = 0.10
RAM_USABLE_FRACTION = 0.80


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


def resolve_source(name_or_path: str | Path | None, profile: str | None = None) -> str:
    """A local folder or a hub id; None means the profile's model."""
    if name_or_path is None:
        return get_profile(profile).model_id
    return str(name_or_path)


def resolve_tokenizer_source(name_or_path: str | Path | None, profile: str | None = None) -> str:
    """Where the tokenizer of that model lives: the profile's tokenizer for the profile's model (the released Grok 2
    and the GROK2_COURSE_MODEL override may keep it elsewhere), else the model's own folder or id."""
    chosen = get_profile(profile)
    if name_or_path is None or str(name_or_path) == chosen.model_id:
        return chosen.tokenizer_id
    return str(name_or_path)


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
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        if source == RELEASED_GROK2_ID:
            # Planning needs only the config, and the course ships the released one: plan without the network.
            return AutoConfig.from_pretrained(GROK2_RELEASED_CONFIG)
        raise CourseError(
            f"Could not read the config of {source!r} from the Hugging Face hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}).",
            "Check the id (it is case-sensitive) on huggingface.co; connect to the internet (and unset "
            "HF_HUB_OFFLINE); for a gated model accept its licence on its hub page and run `hf auth login`; "
            "or use the offline profile: GROK2_COURSE_PROFILE=tiny.",
        ) from error


# ----------------------------------------------------------------------------------------------------- planning


def choose_dtype(dtype, hardware, plan: MemoryPlan) -> torch.dtype:
    if dtype not in (None, "auto"):
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if hardware.device == "cuda":
        return torch.bfloat16 if hardware.supports_bf16 else torch.float16
    if hardware.device == "mps":
        return torch.float16
    fits_fp32 = plan.weight_bytes("fp32") < RAM_USABLE_FRACTION * hardware.ram_available_bytes / 2
    return torch.float32 if fits_fp32 else torch.bfloat16


def _precision_name(dtype: torch.dtype, quantization: str | None) -> str:
    if quantization:
        return QUANTIZATION_PRECISION[quantization]
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def what_would_fit(plan: MemoryPlan, budget_bytes: float) -> str:
    """A sentence for the error message: the cheapest precision that fits, else how many 80 GB GPUs it takes."""
    options = (("bf16", 'dtype="bfloat16"'), ("int8", 'quantization="int8"'), ("nf4", 'quantization="nf4"'))
    for precision, argument in options:
        if plan.weight_bytes(precision) <= budget_bytes:
            return f"It would fit here in {precision} ({format_bytes(plan.weight_bytes(precision))}): pass {argument}"
    gpus = plan.gpus_needed(80 * GB, "bf16")
    gpus_fp8 = plan.gpus_needed(80 * GB, "fp8")
    return (
        f"Even 4-bit needs {format_bytes(plan.weight_bytes('nf4'))}. It needs about {gpus} x 80 GB GPUs in bf16 or "
        f"{gpus_fp8} in FP8 (served with SGLang/vLLM at tensor parallelism {plan.tensor_parallel_size(gpus_fp8)}+); "
        "or use a smaller profile: GROK2_COURSE_PROFILE=small (one T4) or tiny (any CPU)"
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
        budgets = {i: int(g.free_bytes * (1 - GPU_HEADROOM_FRACTION)) for i, g in enumerate(hardware.gpus)}
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
    **from_pretrained_kwargs,
):
    """Load a causal LM (the profile's by default) in eval mode, placed and typed for this machine.

    `plan`: a LoadPlan from `plan_load` (the other arguments are then ignored): load exactly what it decided."""
    placement = plan or plan_load(
        name_or_path, profile=profile, dtype=dtype, quantization=quantization, device_map=device_map, max_memory=max_memory
    )
    source = placement.source
    if verbose:
        print(
            f"Loading {source}: {str(placement.dtype).removeprefix('torch.')}"
            f"{', ' + placement.quantization if placement.quantization else ''}, "
            f"{format_bytes(placement.weight_bytes)} of weights, {placement.reason}."
        )
    if is_local(source) and is_released_layout(source):
        return _load_released_layout(Path(source).expanduser(), placement)
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
    kwargs.update(from_pretrained_kwargs)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as error:
        raise CourseError(
            f"Could not load the weights of {source!r} ({str(error).splitlines()[0][:300]}).",
            "Online: check the id and your connection (gated models need `hf auth login`). Offline: download first "
            "(lesson 01) and pass the local folder.",
        ) from error
    return model.eval()


def _load_released_layout(folder: Path, placement: LoadPlan):
    """xAI's pre-sharded files: stream them into the model (expert slices stitched, quantized on the fly if asked),
    no conversion on disk."""
    device_map = placement.device_map
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device_map = device_map[""]
    return load_released_checkpoint(folder, dtype=placement.dtype, device_map=device_map,
                                    max_memory=placement.max_memory,
                                    quantization_config=quantization_config(placement.quantization, placement.dtype))


def load_tokenizer(name_or_path: str | Path | None = None, *, profile: str | None = None):
    """The tokenizer that goes with the model, set up for generation (left padding, a pad token)."""
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
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise CourseError(
            f"Could not load the tokenizer {source!r} ({str(error).splitlines()[0][:200]}).",
            "Check the id or folder; offline, use GROK2_COURSE_PROFILE=tiny or a downloaded folder.",
        ) from error
    # Decoder-only models continue from the last position: pad on the left so every prompt ends at the same place.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
