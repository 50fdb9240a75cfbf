"""The released Grok 2 checkpoint layout: read it straight into the model, write it, convert it.

xAI published the weights pre-sharded for 8-way tensor parallelism (facts 2.1; SGLang globs exactly these names):

    pytorch_model-00000-TP-common.safetensors     model.embed_tokens.weight
    pytorch_model-00001-TP-common.safetensors     lm_head.weight  (untied)
    pytorch_model-00002-TP-common.safetensors     model.norm.weight
    pytorch_model-00003/4/5-TP-common             every layer's mlp.gate_proj / mlp.down_proj / mlp.up_proj
    pytorch_model-00006/7/8-TP-000 ... TP-007     every layer's and expert's w1 / w2 / w3, 1/8 slice each
    pytorch_model-00009/10/11/12-TP-common        self_attn.k_proj / o_proj / q_proj / v_proj
    pytorch_model-00013/14/15/16-TP-common        pre_attn_norm / post_attn_norm / pre_moe_norm / post_moe_norm
    pytorch_model-00017-TP-common                 block_sparse_moe.gate (the routers)

Only the experts are split: rank r holds rows [r*S, (r+1)*S) of w1 and w3 (their output dimension) and columns of
w2 (its input dimension). Stitching the 8 slices in rank order - w1/w3 along dim 0, w2 along dim 1 - gives the full
expert, which is what llama.cpp's converter and tt-metal's loader do.

Reading is streamed: one full tensor is materialised at a time and moved straight to its device, so loading needs
no more host memory than the largest tensor (plus what stays on CPU by choice).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration_grok2 import RELEASED_CONFIG_KEYS, Grok2Config
from .modeling_grok2 import Grok2ForCausalLM

SHARD_NAME = re.compile(r"^pytorch_model-(\d{5})-TP-(common|\d{3})\.safetensors$")

# What each numbered file holds, by the suffix of the tensor names (the writer uses this; the reader needs no map).
RELEASED_FILE_CONTENTS = {
    0: "model.embed_tokens.weight",
    1: "lm_head.weight",
    2: "model.norm.weight",
    3: "mlp.gate_proj.weight",
    4: "mlp.down_proj.weight",
    5: "mlp.up_proj.weight",
    6: "w1.weight",
    7: "w2.weight",
    8: "w3.weight",
    9: "self_attn.k_proj.weight",
    10: "self_attn.o_proj.weight",
    11: "self_attn.q_proj.weight",
    12: "self_attn.v_proj.weight",
    13: "pre_attn_norm.weight",
    14: "post_attn_norm.weight",
    15: "pre_moe_norm.weight",
    16: "post_moe_norm.weight",
    17: "block_sparse_moe.gate.weight",
}
TENSOR_PARALLEL_FILES = (6, 7, 8)


def expert_split_dim(name: str) -> int:
    """w1 and w3 are split along their output rows, w2 along its input columns."""
    return 1 if name.endswith("w2.weight") else 0


def is_released_layout(folder: str | Path) -> bool:
    return any(SHARD_NAME.match(p.name) for p in Path(folder).glob("pytorch_model-*-TP-*.safetensors"))


def released_shards(folder: str | Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """(files that hold whole tensors, {file number: its TP slices in rank order})."""
    common, sliced = [], defaultdict(dict)
    for path in sorted(Path(folder).glob("pytorch_model-*-TP-*.safetensors")):
        match = SHARD_NAME.match(path.name)
        if not match:
            continue
        number, part = match.groups()
        if part == "common":
            common.append(path)
        else:
            sliced[number][int(part)] = path
    ordered = {}
    for number, by_rank in sliced.items():
        ranks = sorted(by_rank)
        if ranks != list(range(len(ranks))):
            missing = [f"pytorch_model-{number}-TP-{r:03d}.safetensors" for r in range(ranks[-1]) if r not in by_rank]
            raise FileNotFoundError(f"{folder}: TP slices of file {number} are incomplete, missing {', '.join(missing)}."
                                    f"\nFix: pull them again in that folder: git lfs pull --include "
                                    f"'pytorch_model-{number}-TP-*' (lesson 01).")
        ordered[number] = [by_rank[r] for r in ranks]
    return common, ordered


def iter_released_tensors(folder: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a released checkpoint with its full shape, one at a time."""
    common, sliced = released_shards(folder)
    for path in common:
        with safe_open(path, framework="pt") as shard:
            for name in shard.keys():
                yield name, shard.get_tensor(name)
    for number, paths in sorted(sliced.items()):
        handles = [safe_open(p, framework="pt") for p in paths]
        try:
            for name in handles[0].keys():
                pieces = [h.get_tensor(name) for h in handles]
                yield name, torch.cat(pieces, dim=expert_split_dim(name))
        finally:
            del handles


def _device_for(name: str, device_map: dict) -> str | int:
    """Longest module prefix of `name` in an accelerate device map."""
    best, device = -1, "cpu"
    for module, target in device_map.items():
        if (module == "" or name == module or name.startswith(module + ".")) and len(module) > best:
            best, device = len(module), target
    return device


def _quantize_linear_layers(model: Grok2ForCausalLM, quantization_config) -> None:
    """Swap (on the meta device) every nn.Linear that bitsandbytes would quantize for its 8/4-bit module - the same
    swap `from_pretrained(quantization_config=...)` does, so both paths give the same model."""
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    replace_with_bnb_linear(model, modules_to_not_convert=list(quantization_config.llm_int8_skip_modules or []),
                            quantization_config=quantization_config)
    model.config.quantization_config = quantization_config


def _place_tensor(model, name: str, tensor: torch.Tensor, device, dtype: torch.dtype) -> None:
    """Put one checkpoint tensor into the model on `device`; weights of 8/4-bit modules are quantized on the way."""
    import bitsandbytes as bnb
    from accelerate.utils import set_module_tensor_to_device

    module_name, _, param_name = name.rpartition(".")
    module = model.get_submodule(module_name)
    target = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if param_name == "weight" and isinstance(module, bnb.nn.Linear4bit):
        old = module.weight  # the meta Params4bit carries the settings (quant type, blocksize, double quantization)
        settings = {k: v for k, v in old.__dict__.items() if k in ("blocksize", "compress_statistics", "quant_type",
                                                                     "quant_storage", "module")}
        # .to(device) quantizes: bitsandbytes packs the codes and block scales on the target device
        module.weight = bnb.nn.Params4bit(tensor.to(target, dtype), requires_grad=False, **settings).to(target)
    elif param_name == "weight" and isinstance(module, bnb.nn.Linear8bitLt):
        settings = {"has_fp16_weights": module.weight.has_fp16_weights}
        # Int8Params quantizes when it moves from the CPU to its device (CPU -> CPU included)
        module.weight = bnb.nn.Int8Params(tensor.to("cpu", dtype), requires_grad=False, **settings).to(target)
    else:
        set_module_tensor_to_device(model, name, device, value=tensor, dtype=dtype)


def _size_dtype(quantization_config):
    """The dtype accelerate should price quantized layers at when it splits the model over devices."""
    from accelerate.utils import CustomDtype

    if quantization_config is None:
        return None
    return torch.int8 if quantization_config.load_in_8bit else CustomDtype.INT4


def empty_model(config: Grok2Config, quantization_config=None) -> Grok2ForCausalLM:
    """Grok 2 on the meta device (no memory), with its Linear layers swapped for 8/4-bit ones if asked: what
    `plan_device_map` prices and what the loader fills."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = Grok2ForCausalLM(config)
    if quantization_config is not None:
        _quantize_linear_layers(model, quantization_config)
    return model


def plan_device_map(model, max_memory: dict | None, dtype: torch.dtype, quantization_config=None) -> dict:
    """accelerate's device map for an empty model, with quantized layers priced at 8 or 4 bits (the modules kept in
    full precision at `dtype`): whole decoder layers go to the GPUs in order, then the CPU."""
    from accelerate import infer_auto_device_map

    kept = list(quantization_config.llm_int8_skip_modules or []) if quantization_config is not None else []
    special = {n: dtype for n, _ in model.named_parameters() if any(k in n for k in kept)}
    return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=model._no_split_modules,
                                 dtype=_size_dtype(quantization_config) or dtype, special_dtypes=special or None)


def load_released_checkpoint(
    folder: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    quantization_config=None,
) -> Grok2ForCausalLM:
    """Build Grok 2 with empty weights, then stream the released files into it, tensor by tensor, onto their devices.

    `quantization_config` (a transformers BitsAndBytesConfig, e.g. `helpers.quantization.quantization_config("nf4",
    torch.bfloat16)`) quantizes each weight matrix as it arrives: host memory never holds more than one full tensor,
    which is how a 4-bit Grok 2.5 (~142 GB) loads onto 2 x 80 GB GPUs without a converted copy on disk.
    """
    from accelerate import dispatch_model

    model = empty_model(Grok2Config.from_pretrained(folder), quantization_config)
    if device_map is None:
        device_map = {"": "cpu"}
    elif isinstance(device_map, str):
        if device_map != "auto":
            device_map = {"": device_map}
        else:
            device_map = plan_device_map(model, max_memory, dtype, quantization_config)
    if quantization_config is not None and "disk" in set(device_map.values()):
        raise ValueError("8/4-bit layers cannot be offloaded to disk: give the GPUs/CPU more memory (max_memory).")
    expected = {name for name, _ in model.named_parameters()}
    for name, tensor in iter_released_tensors(folder):
        if name not in expected:
            raise KeyError(f"{folder}: unexpected tensor {name!r} (is this a Grok 2 checkpoint?)")
        _place_tensor(model, name, tensor, _device_for(name, device_map), dtype)
        expected.discard(name)
    if expected:
        missing = ", ".join(sorted(expected)[:5])
        raise KeyError(f"{folder}: {len(expected)} tensors missing from the checkpoint, e.g. {missing}")
    if len(set(device_map.values())) > 1:
        model = dispatch_model(model, device_map=device_map)
    model.config.dtype = dtype
    return model.eval()


def _atomic_folder(destination: Path):
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))


def _replace_folder(staging: Path, destination: Path) -> None:
    if destination.exists():
        old = destination.with_name(destination.name + ".old")
        os.replace(destination, old)
        os.replace(staging, destination)
        shutil.rmtree(old)
    else:
        os.replace(staging, destination)


def save_in_released_layout(model: Grok2ForCausalLM, folder: str | Path, tp_size: int = 8) -> Path:
    """Write a model exactly as xAI released Grok 2 (file names, TP slices, `model_type: "git"`), atomically."""
    folder = Path(folder)
    config = model.config
    if config.moe_intermediate_size % tp_size:
        raise ValueError(f"moe_intermediate_size {config.moe_intermediate_size} is not divisible by tp_size {tp_size}")
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    staging = _atomic_folder(folder)
    try:
        for number, suffix in RELEASED_FILE_CONTENTS.items():
            names = sorted(n for n in state if n == suffix or n.endswith("." + suffix))
            if number not in TENSOR_PARALLEL_FILES:
                save_file({n: state[n] for n in names}, staging / f"pytorch_model-{number:05d}-TP-common.safetensors")
                continue
            for rank in range(tp_size):
                part = {n: state[n].chunk(tp_size, dim=expert_split_dim(n))[rank].contiguous() for n in names}
                save_file(part, staging / f"pytorch_model-{number:05d}-TP-{rank:03d}.safetensors")
        released = json.loads(config.to_json_string())
        on_disk = {key: released.get(key) for key in RELEASED_CONFIG_KEYS}
        on_disk["model_type"] = "git"  # as released
        on_disk["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
        (staging / "config.json").write_text(json.dumps(on_disk, indent=2) + "\n")
        _replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def convert_released_checkpoint(source: str | Path, destination: str | Path, max_shard_bytes: int = 5 * 1024**3) -> Path:
    """Rewrite a released checkpoint as ordinary transformers shards (+ index), streaming, atomically.

    Afterwards `from_pretrained(destination)` works with every transformers feature, including bitsandbytes
    quantization while loading. Needs as much free disk as the source.
    """
    source, destination = Path(source), Path(destination)
    staging = _atomic_folder(destination)
    try:
        weight_map, shard, shard_bytes, shard_paths = {}, {}, 0, []

        def flush():
            nonlocal shard, shard_bytes
            if shard:
                path = staging / f"model-{len(shard_paths) + 1:05d}.safetensors"
                save_file(shard, path, metadata={"format": "pt"})
                shard_paths.append(path)
                for name in shard:
                    weight_map[name] = path.name
                shard, shard_bytes = {}, 0

        for name, tensor in iter_released_tensors(source):
            size = tensor.numel() * tensor.element_size()
            if shard and shard_bytes + size > max_shard_bytes:
                flush()
            shard[name], shard_bytes = tensor.contiguous(), shard_bytes + size
        flush()
        total = len(shard_paths)
        renamed = {}
        for index, path in enumerate(shard_paths, start=1):
            final = path.with_name(f"model-{index:05d}-of-{total:05d}.safetensors")
            os.replace(path, final)
            renamed[path.name] = final.name
        weight_map = {name: renamed[file] for name, file in weight_map.items()}
        index = {"metadata": {"total_size": sum((staging / f).stat().st_size for f in set(weight_map.values()))}, "weight_map": weight_map}
        (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        config = json.loads((source / "config.json").read_text())
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for extra in ("tokenizer.tok.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "LICENSE", "README.md"):
            if (source / extra).exists():
                shutil.copy2(source / extra, staging / extra)
        _replace_folder(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination
