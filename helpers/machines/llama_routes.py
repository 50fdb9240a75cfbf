"""The llama.cpp routes for a GGUF Grok 2.5: wholly on the GPUs, hybrid (the experts of all layers, or of the first N,
in system RAM and the rest on the GPUs), CPU only, and Apple unified memory through Metal. Sizes per class come from
`helpers.gguf.gguf_size` (the tensor list and llama.cpp's block sizes); commands from `helpers.engines`, with the
file names of unsloth/grok-2-GGUF (`helpers.gguf.UNSLOTH_FILES`).

Read in the llama.cpp vendored by llama-cpp-python 0.3.36: `--cpu-moe` keeps every `ffn_*_exps` tensor in a CPU
buffer, `--n-cpu-moe N` those of layers 0..N-1 (common/arg.cpp, common/common.h); `--n-gpu-layers L` puts the last
L - 1 layers and the output layer on the GPUs, the rest on the CPU (src/llama-model.cpp: i_gpu_start =
n_layer + 1 - L); the token embeddings always stay in host memory; layers are split over several GPUs in proportion
to their memory, and run one GPU after the other; a layer's KV cache lives where the layer runs; for batches of 32
tokens and more, weights kept in host memory are copied to the GPU to be multiplied there (`--op-offload`, on by
default; GGML_OP_OFFLOAD_MIN_BATCH = 32).

A file whose size is approximated (one of unsloth's calibrated "UD" mixes, priced as llama.cpp's mix of the same base
type) must fit with `weights.APPROXIMATE_MARGIN` to spare, or by its published size where one is recorded
(`Weights.fit_scale`); the fit lines say so.
"""

from __future__ import annotations

from .. import accelerators as hw
from .. import engines, gguf
from ..units import GFLOPS, TFLOPS, MiB
from .machine import Machine
from .route import GPU_USABLE, PREFILL_BATCH, RAM_USABLE, Memory, Placement, Route, gb, spread_time
from .weights import LABELS, PER_LAYER, Weights, gguf_quants, gguf_weights, grok2_plan, grok2_shape

FAMILIES = ("gpu", "hybrid", "cpu", "metal")
TITLES = {"gpu": "llama.cpp, GGUF wholly on the GPUs", "hybrid": "llama.cpp hybrid: experts in RAM, the rest on GPU",
          "cpu": "llama.cpp, CPU only", "metal": "llama.cpp on Apple unified memory (Metal)"}
DENSE = tuple(name for name in PER_LAYER if name != "experts")  # what a layer keeps on the GPU under --cpu-moe
LOCAL_DIR = "grok-2-GGUF"  # where the commands expect `hf download ... --local-dir` to have put the files


def _devices(machine: Machine) -> list[tuple[float, float]]:
    return [(GPU_USABLE * g.memory_bytes, g.memory_bandwidth) for g in machine.gpus]


def _gpu_prefill(machine: Machine, weights: Weights, on_gpu: float, host_resident: float) -> tuple[float, str]:
    """One ubatch of PREFILL_BATCH tokens: the GPUs' int8 arithmetic (layers one GPU after the other), their reads,
    and the host-resident weights copied over PCIe (op offload). The slowest of the three bounds it."""
    capacity = sum(c for c, _ in _devices(machine))
    flops = weights.shape.flops_per_token() * PREFILL_BATCH
    compute = sum(flops * GPU_USABLE * g.memory_bytes / capacity / g.matrix_rate(weights.operands)
                  for g in machine.gpus)
    reading = spread_time(on_gpu, _devices(machine))
    link = min(g.host_link_bandwidth for g in machine.gpus)
    crossing = host_resident / link
    limits = {"int8 arithmetic": compute, "reading the GPU weights": reading,
              f"copying {gb(host_resident)} of host weights over PCIe": crossing}
    slowest = max(limits, key=limits.get)
    return PREFILL_BATCH / limits[slowest], f"{PREFILL_BATCH}-token ubatches: {slowest} bounds it"


def _route(family: str, weights: Weights, context: int) -> Route:
    quant = weights.name.removeprefix("GGUF ")
    route = Route(f"llama.cpp-{family}-{quant}", "llama.cpp", TITLES[family], weights, True, [], context=context)
    route.disk_bytes = weights.sized_for_fit(weights.stored)
    route.disk_why = (f"the GGUF file(s) from unsloth/grok-2-GGUF (no conversion: the "
                      f"{gb(grok2_plan().weight_bytes('bf16'))} released checkpoint is not needed)"
                      + ("" if weights.exact else ", counted with the margin of an approximate size"))
    route.needs.append("llama.cpp with Grok 2 support (PR #15539) and the grok-2 pre-tokenizer")
    if quant in gguf.UNSLOTH_GROK2_QUANTS:
        route.needs.append(f"the file: {gguf.unsloth_download_command(quant, LOCAL_DIR)}")
    if not weights.exact:
        route.notes.append(f"GGUF size: {weights.note}")
    return route


def _ram_fit(route: Route, machine: Machine, in_ram: float, what: str) -> None:
    """`in_ram`: bytes as the fit counts them (weights already sized by Weights.sized_for_fit)."""
    room = RAM_USABLE * machine.ram_bytes
    ok = in_ram <= room
    route.fits = route.fits and ok
    route.why.append(f"{what} {gb(in_ram)} {'<=' if ok else '>'} {gb(room)} usable of {gb(machine.ram_bytes)} RAM")


def _layer_span(layers: list[int], total: int) -> str:
    if len(layers) == total:
        return ""
    return f", layer {layers[0]}" if len(layers) == 1 else f", layers {layers[0]}-{layers[-1]}"


def _by_class(weights: Weights, kv: float, gpu: str, ram: str, n_cpu: int, dense_ram: int,
              output_on_gpu: bool) -> list[Placement]:
    """Every tensor class of a llama.cpp layout placed: the experts of layers < n_cpu in `ram`, the dense parts of
    layers < dense_ram (and their KV cache) in `ram`, the output layer (LM head, final norm) on `gpu` if
    output_on_gpu, the token embeddings always in `ram`; everything else on `gpu`."""
    layers = weights.shape.layers
    placed = []
    for name in PER_LAYER:
        per_layer = weights.layers_of(name)
        cut = n_cpu if name == "experts" else dense_ram
        for where, span in ((ram, range(0, cut)), (gpu, range(cut, layers))):
            if span:
                label = LABELS[name] + _layer_span(list(span), layers)
                placed.append(Placement(label, where, sum(per_layer[i] for i in span), name))
    for where, span in ((ram, range(0, dense_ram)), (gpu, range(dense_ram, layers))):
        if span:
            placed.append(Placement(f"KV cache ({len(span)} layers)" if len(span) < layers else "KV cache", where,
                                    kv * len(span) / layers, "kv_cache"))
    final_norm = weights.bytes_by_class["norms"] - sum(weights.layers_of("norms"))
    head = gpu if output_on_gpu else ram
    placed.append(Placement(LABELS["lm_head"], head, weights.bytes_by_class["lm_head"], "lm_head"))
    if final_norm > 0:
        placed.append(Placement("final norm", head, final_norm, "norms"))
    placed.append(Placement(LABELS["embeddings"], ram, weights.bytes_by_class["embeddings"], "embeddings"))
    return placed


def _one_memory(route: Route, weights: Weights, kv: float, name: str, kind: str, bandwidth: float,
                room: float) -> None:
    """Every class and the KV cache in one memory (CPU only, Metal)."""
    route.placement = [Placement(LABELS[c], name, b, c) for c, b in weights.bytes_by_class.items()]
    route.placement.append(Placement(f"KV cache ({route.context:,} tokens)", name, kv, "kv_cache"))
    route.capacities[name] = room
    route.memories = [Memory(name, kind, bandwidth, route.reads(name), weights.total + kv, room)]


def gpu_route(machine: Machine, weights: Weights, context: int) -> Route:
    route = _route("gpu", weights, context)
    if machine.apple or not machine.gpus:
        return route.not_applicable("needs CUDA GPUs (on a Mac: the Metal route)")
    kv = weights.shape.kv_bytes(context)
    embeddings = weights.bytes_by_class["embeddings"]
    on_gpu = weights.total - embeddings + kv
    counted = weights.sized_for_fit(weights.total - embeddings) + kv
    room = sum(c for c, _ in _devices(machine))
    route.fits = counted <= room
    route.why.append(f"{weights.name} {gb(weights.total)} less the token embeddings (kept in RAM) + KV cache "
                     f"{gb(kv)} = {gb(on_gpu)}" + (f", counted as {gb(counted)}" if counted != on_gpu else "")
                     + weights.fit_words() + f" {'<=' if route.fits else '>'} {gb(room)} usable on "
                     f"{machine.gpu_summary()}")
    if not route.fits:
        return route
    where = f"GPU memory ({machine.gpu_summary()}, layers in sequence)"
    ram = f"system RAM ({machine.ram_name})"
    route.placement = _by_class(weights, kv, where, ram, 0, 0, True)
    route.capacities = {where: room, ram: RAM_USABLE * machine.ram_bytes}
    route.memories = [Memory(where, "gpu", 1 / spread_time(1.0, _devices(machine)), route.reads(where), on_gpu, room)]
    route.gpus_used = machine.gpu_count
    route.prefill_tok_s, route.prefill_why = _gpu_prefill(machine, weights, on_gpu, 0.0)
    route.command = _command(weights, context, gpu_layers=weights.shape.layers + 1)
    return route


def hybrid_split(machine: Machine, weights: Weights, context: int, n_cpu_moe: int | None = None) -> dict:
    """How llama.cpp's hybrid layout fills the GPUs: if the always-on part fits, the experts of the first N layers
    go to RAM (N as small as it can be: `--n-cpu-moe N`, or `--cpu-moe` for all; or the N you give); if not, every
    expert goes to RAM and only the dense parts of the last L - 1 layers and the output layer stay on the GPUs
    (`--cpu-moe -ngl L`). Layers are priced one by one (a mix gives some layers more bits); an approximate size is
    counted with its margin (`scale`). `gpu_fits` says whether the GPU part fits (it can fail only for an N you
    give). Byte figures are the computed ones; the decisions use them times `scale` (the KV cache is not scaled)."""
    shape = weights.shape
    layers, kv = shape.layers, shape.kv_bytes(context)
    if n_cpu_moe is not None and (isinstance(n_cpu_moe, bool) or not isinstance(n_cpu_moe, int)
                                  or not 0 <= n_cpu_moe <= layers):
        raise ValueError(f"n_cpu_moe must be a whole number from 0 to {layers}, got {n_cpu_moe!r}")
    scale = weights.fit_scale
    room = sum(c for c, _ in _devices(machine))
    embeddings = weights.bytes_by_class["embeddings"]
    dense_weights = weights.always_on - embeddings  # attention, dense MLP, routers, norms, LM head
    always_on = dense_weights + kv
    experts = weights.expert_layers
    split = {"always_on": always_on, "room": room, "embeddings": embeddings, "kv": kv, "scale": scale}
    if scale * dense_weights + kv <= room:
        n_cpu = n_cpu_moe
        if n_cpu is None:  # the fewest first layers whose experts must leave the GPUs
            n_cpu = next(n for n in range(layers + 1) if scale * (dense_weights + sum(experts[n:])) + kv <= room)
        gpu_bytes = always_on + sum(experts[n_cpu:])
        return {**split, "always_on_fits": True, "n_cpu_moe": n_cpu, "gpu_layers": layers + 1,
                "gpu_bytes": gpu_bytes, "gpu_fits": scale * (gpu_bytes - kv) + kv <= room,
                "ram_experts": sum(experts[:n_cpu]), "ram_dense": 0.0, "ram_dense_layers": 0, "output_on_gpu": True,
                "ram_kv": 0.0, "ram_bytes": sum(experts[:n_cpu]) + embeddings}
    dense = weights.dense_layers
    output = weights.bytes_by_class["lm_head"] + weights.bytes_by_class["norms"] - sum(weights.layers_of("norms"))
    output_on_gpu = scale * output <= room
    on_gpu = 0  # the dense parts of the last `on_gpu` layers join the output layer on the GPUs (-ngl on_gpu + 1)
    if output_on_gpu:
        while on_gpu < layers and (scale * (output + sum(dense[layers - on_gpu - 1:]))
                                   + kv * (on_gpu + 1) / layers) <= room:
            on_gpu += 1
    kv_gpu = kv * on_gpu / layers
    gpu_bytes = (output if output_on_gpu else 0.0) + sum(dense[layers - on_gpu:]) + kv_gpu
    ram_dense = sum(dense[:layers - on_gpu]) + (kv - kv_gpu) + (0.0 if output_on_gpu else output)
    return {**split, "always_on_fits": False, "n_cpu_moe": layers, "gpu_layers": on_gpu + 1 if output_on_gpu else 0,
            "gpu_bytes": gpu_bytes, "gpu_fits": True, "ram_experts": weights.experts, "ram_dense": ram_dense,
            "ram_dense_layers": layers - on_gpu, "output_on_gpu": output_on_gpu, "ram_kv": kv - kv_gpu,
            "ram_bytes": weights.experts + ram_dense + embeddings}


def describe_hybrid_layout(split: dict, layers: int | None = None) -> str:
    """One sentence saying where llama.cpp's hybrid layout (`hybrid_split`, or a hybrid route's `layout`) keeps each
    tensor class, with its flags: the lessons print it rather than describe one case in prose."""
    layers = layers or grok2_plan().num_layers
    if split["always_on_fits"]:
        n = split["n_cpu_moe"]
        if n == 0:
            return "everything but the token embeddings on the GPU (no flag: no expert needs RAM)"
        on_gpu = ("attention, dense MLP, routers, norms, LM head and the KV cache on the GPU"
                  + ("" if n == layers else f", with the experts of layers {n}-{layers - 1}"))
        in_ram = ("every layer's experts" if n == layers else f"the experts of layers 0-{n - 1}")
        flag = "--cpu-moe" if n == layers else f"--n-cpu-moe {n}"
        return f"{on_gpu}; {in_ram} and the token embeddings in RAM (`{flag}`)"
    cut = split["ram_dense_layers"]
    if not split["output_on_gpu"]:
        return ("even the output layer does not fit the GPU: every tensor in RAM (`--cpu-moe -ngl 0`): the CPU route "
                "with extra steps")
    gpu_part = (f"the attention, dense MLP, routers, norms and KV cache of layers {cut}-{layers - 1} and the output "
                "layer (LM head, final norm)" if cut < layers else "only the output layer (LM head, final norm)")
    ram_part = ("" if cut == 0 else f"; layers 0-{cut - 1} wholly in RAM too (their attention, dense MLP, routers, "
                "norms and KV cache)")
    return (f"even the always-on part does not fit the GPU: every layer's experts and the token embeddings in RAM "
            f"(`--cpu-moe`), {gpu_part} on the GPU (`-ngl {split['gpu_layers']}`){ram_part}")


def hybrid_route(machine: Machine, weights: Weights, context: int, n_cpu_moe: int | None = None) -> Route:
    """llama.cpp with experts in RAM: the fewest layers' experts there that let the rest fit the GPUs, or exactly
    `n_cpu_moe` layers' (64: all of them, `--cpu-moe`)."""
    route = _route("hybrid", weights, context)
    if machine.apple or not machine.gpus:
        return route.not_applicable("needs a CUDA GPU beside the RAM (a Mac's memory is already shared: the Metal "
                                    "route)")
    shape, split = weights.shape, hybrid_split(machine, weights, context, n_cpu_moe)
    layers, n_cpu = shape.layers, split["n_cpu_moe"]
    route.layout = split
    counted = "" if weights.exact else f" (counted x{split['scale']:.2f}: {weights.fit_words().strip(' ()')})"
    if split["always_on_fits"]:
        route.why.append(f"always-on part (attention, dense MLP, routers, norms, LM head + KV cache of {context:,} "
                         f"tokens) {gb(split['always_on'])} <= {gb(split['room'])} usable on {machine.gpu_summary()}"
                         f"{counted}; the experts of {layers - n_cpu} of {layers} layers "
                         + ("fit" if split["gpu_fits"] else f"do not fit ({gb(split['gpu_bytes'])} in all)")
                         + " beside it")
        if not split["gpu_fits"]:
            route.fits = False
            return route
        if n_cpu == 0 and n_cpu_moe != 0:
            return route.not_applicable("everything fits on the GPUs: the GPU route (no expert needs RAM)")
        flags = {"cpu_moe": True} if n_cpu == layers else {"n_cpu_moe": n_cpu}
        route.why.append("--cpu-moe: every layer's experts in RAM" if n_cpu == layers else
                         f"--n-cpu-moe {n_cpu}: the experts of layers 0-{n_cpu - 1} in RAM")
    else:
        on_gpu = layers - split["ram_dense_layers"]
        route.why.append(f"even the always-on part ({gb(split['always_on'])}: attention, dense MLP, LM head, KV "
                         f"cache) does not fit {gb(split['room'])} usable on {machine.gpu_summary()} at "
                         f"{weights.name}{counted}: all experts in RAM (--cpu-moe) and -ngl {split['gpu_layers']}: "
                         f"the dense parts of the last {on_gpu} layers"
                         + (" and the output layer" if split["gpu_layers"] else "")
                         + " on the GPU, the first " + f"{split['ram_dense_layers']} layers wholly on the CPU")
        flags = {"cpu_moe": True}
    _ram_fit(route, machine, weights.sized_for_fit(split["ram_bytes"] - split["ram_kv"]) + split["ram_kv"], "in RAM:")
    if not route.fits:
        return route
    gpu_name = f"GPU memory ({machine.gpu_summary()})"
    ram_name = f"system RAM ({machine.ram_name})"
    route.placement = _by_class(weights, split["kv"], gpu_name, ram_name, n_cpu, split["ram_dense_layers"],
                                split["output_on_gpu"])
    route.capacities = {gpu_name: split["room"], ram_name: RAM_USABLE * machine.ram_bytes}
    route.memories = [Memory(gpu_name, "gpu", 1 / spread_time(1.0, _devices(machine)), route.reads(gpu_name),
                             split["gpu_bytes"], split["room"]),
                      Memory(ram_name, "ram", machine.ram_bandwidth, route.reads(ram_name), split["ram_bytes"],
                             RAM_USABLE * machine.ram_bytes)]
    route.notes.append("the CPU multiplies the experts kept in RAM: the bound counts its memory reads, not its "
                       "arithmetic (a few cores cannot keep up with the RAM; then the CPU is the limit)")
    route.gpus_used = machine.gpu_count
    route.prefill_tok_s, route.prefill_why = _gpu_prefill(machine, weights, split["gpu_bytes"], split["ram_bytes"])
    route.command = _command(weights, context, gpu_layers=split["gpu_layers"], **flags)
    return route


def _one_memory_prefill(route: Route, weights: Weights, nbytes: float, bandwidth: float, flops: float | None,
                        rate_said: str, unknown_said: str) -> None:
    """Prefill where one memory holds everything: a ubatch reads every weight once and does its arithmetic. Without a
    known arithmetic rate there is no honest bound (reading the weights alone would promise far too much: arithmetic
    is what limits a CPU's or a Mac's prefill), so it is left out and `prefill_why` says why."""
    if not flops:
        route.prefill_tok_s, route.prefill_why = None, f"omitted: {unknown_said}"
        return
    reading = nbytes / bandwidth
    compute = weights.shape.flops_per_token() * PREFILL_BATCH / flops
    route.prefill_tok_s, route.prefill_why = PREFILL_BATCH / max(compute, reading), rate_said


def cpu_route(machine: Machine, weights: Weights, context: int) -> Route:
    route = _route("cpu", weights, context)
    kv = weights.shape.kv_bytes(context)
    if machine.apple:
        return route.not_applicable("a Mac's CPU reads the same unified memory as its GPU: the Metal route does "
                                    "the same with the GPU's arithmetic")
    _ram_fit(route, machine, weights.sized_for_fit(weights.total) + kv,
             f"{weights.name} + KV cache {gb(kv)}{weights.fit_words()}:")
    if not route.fits:
        return route
    name = f"system RAM ({machine.ram_name})"
    _one_memory(route, weights, kv, name, "ram", machine.ram_bandwidth, RAM_USABLE * machine.ram_bytes)
    _one_memory_prefill(route, weights, weights.total + kv, machine.ram_bandwidth, machine.cpu_flops,
                        f"the CPU's measured {(machine.cpu_flops or 0) / GFLOPS:,.0f} GFLOP/s",
                        "the CPU's arithmetic rate is not known (this_machine() measures it), and it is what limits "
                        "a CPU's prefill")
    route.command = _command(weights, context, gpu_layers=0)
    return route


def metal_route(machine: Machine, weights: Weights, context: int) -> Route:
    route = _route("metal", weights, context)
    if not machine.apple:
        return route.not_applicable("needs an Apple-silicon Mac")
    chip, kv = machine.unified, weights.shape.kv_bytes(context)
    need = weights.total + kv
    counted = weights.sized_for_fit(weights.total) + kv
    default = hw.METAL_DEFAULT_WORKING_SET * machine.ram_bytes
    raised = RAM_USABLE * machine.ram_bytes
    route.fits = counted <= raised
    route.why.append(f"{weights.name} {gb(weights.total)} + KV cache {gb(kv)} = {gb(need)}"
                     + (f", counted as {gb(counted)}{weights.fit_words()}" if counted != need else "")
                     + f"; the GPU may wire {gb(default)} by default ({hw.METAL_DEFAULT_WORKING_SET:.0%} of "
                     f"{gb(machine.ram_bytes)})"
                     + ("" if counted <= default else f", {gb(raised)} with iogpu.wired_limit_mb raised to "
                                                      f"{RAM_USABLE:.0%}"))
    if not route.fits:
        return route
    if counted > default:
        route.needs.append(f"sudo sysctl iogpu.wired_limit_mb={int(raised / MiB)} (until the next reboot; leaves the "
                           "rest to macOS)")
    name = f"unified memory ({chip.name})"
    _one_memory(route, weights, kv, name, "unified", chip.memory_bandwidth, raised)
    _one_memory_prefill(route, weights, need, chip.memory_bandwidth, chip.gpu_flops,
                        f"the GPU's {(chip.gpu_flops or 0) / TFLOPS:,.1f} TFLOP/s",
                        "Apple publishes no matrix rate for its GPUs (measure it: "
                        "helpers.roofline.measure_matmul_rate('mps')), and arithmetic is what limits a Mac's prefill")
    route.command = _command(weights, context, gpu_layers=weights.shape.layers + 1)
    return route


BUILDERS = {"gpu": gpu_route, "hybrid": hybrid_route, "cpu": cpu_route, "metal": metal_route}


def _command(weights: Weights, context: int, **options):
    """The llama-server command for this quantization: for a file of unsloth/grok-2-GGUF, --model as `hf download
    --local-dir LOCAL_DIR` lays it out (engines.unsloth_llama_cpp_command: the file, or the first of its parts); for
    another type, the file you made (engines.gguf_conversion_steps names it grok-2-<type>.gguf)."""
    quant = weights.name.removeprefix("GGUF ")
    options = {k: v for k, v in options.items() if v is not None}
    if quant in gguf.UNSLOTH_FILES:
        return engines.unsloth_llama_cpp_command(quant, LOCAL_DIR, context_size=context, **options)
    return engines.llama_cpp_command(f"grok-2-{quant}.gguf", context_size=context, **options)


def llama_cpp_route(machine: Machine, family: str, quant: str, context: int = 8192) -> Route:
    """llama.cpp's route `family` ("gpu", "hybrid", "cpu", "metal") for one GGUF type `quant` (any of
    helpers.gguf.GGUF_QUANTS, an unsloth file or llama.cpp's own mix such as "Q4_K_M"): the planner's own fit, so a
    lesson that asks "does this file fit this machine?" gets the answer lesson 07 prints."""
    from ..errors import CourseError

    if family not in BUILDERS:
        raise CourseError(f"family must be one of {', '.join(FAMILIES)}, not {str(family)[:40]!r}.",
                          "gpu: the GGUF wholly on the GPUs; hybrid: experts in RAM; cpu: RAM only; metal: a Mac.")
    if not isinstance(quant, str) or quant not in gguf.GGUF_QUANTS:
        raise CourseError(f"Unknown GGUF type {str(quant)[:40]!r}.",
                          f"Use one of helpers.gguf.GGUF_QUANTS: {', '.join(gguf.GGUF_QUANTS)}.")
    limit = grok2_shape().max_context
    if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= limit:
        raise CourseError(f"context must be a whole number of tokens from 1 to {limit:,}, got {context!r}.",
                          f"Grok 2.5's context is {limit:,} tokens; 8192 is the course's default.")
    return BUILDERS[family](machine, gguf_weights(quant), context)


def llama_cpp_options(machine: Machine, family: str, context: int = 8192) -> list[Route]:
    """The route `family` ("gpu", "hybrid", "cpu", "metal") at every GGUF quantization, smallest file first."""
    if family not in BUILDERS:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    options = [BUILDERS[family](machine, gguf_weights(q), context) for q in gguf_quants()]
    return sorted(options, key=lambda r: r.weights.total)


def best_llama_cpp(machine: Machine, family: str, context: int = 8192) -> Route:
    """The largest (most precise) quantization that fits this route, or the smallest one, not fitting, saying why.
    Not the fastest: a smaller file reads fewer bytes per token (`fastest_llama_cpp`)."""
    options = llama_cpp_options(machine, family, context)
    fitting = [r for r in options if r.fits]
    return fitting[-1] if fitting else options[0]


def fastest_llama_cpp(machine: Machine, family: str, context: int = 8192) -> Route | None:
    """The quantization with the highest decode bound that fits this route (usually the smallest file), or None."""
    fitting = [r for r in llama_cpp_options(machine, family, context) if r.fits]
    return max(fitting, key=lambda r: r.decode_tok_s) if fitting else None


__all__ = ["FAMILIES", "TITLES", "LOCAL_DIR", "gpu_route", "hybrid_route", "hybrid_split", "describe_hybrid_layout",
           "cpu_route", "metal_route", "llama_cpp_route",
           "llama_cpp_options", "best_llama_cpp", "fastest_llama_cpp"]
