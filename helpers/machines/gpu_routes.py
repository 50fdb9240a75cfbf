"""The GPU-server routes: SGLang FP8 at tensor parallelism 8 on the released files (the official one), vLLM 0.24.x
(the last release that serves Grok 2), SGLang over two nodes, and the course's own transformers path (bf16 / int8 /
nf4 with `device_map`, offloading to RAM over PCIe and to NVMe).

Facts (docs/grok2-facts.md): the official command and TP 8 (3.1, 3.2); vLLM's Grok 2 support, its removal after
0.24.0 and FP8 weight-only on compute capability 7.5-8.6 (3.3, 5.1, 8). Read in the engines' own code: SGLang 0.5.23's
`grok.py` globs each rank's `*-TP-{rank:03d}.safetensors`, so on the released files TP must be 8 (any other TP runs
on the converted checkpoint with `load_presharded_moe` off: `engines.SGLANG_REPACK`), and its Grok model has no
pipeline parallelism, so a second node extends tensor parallelism; SGLang turns on FP8 Marlin (weight-only) on
compute capability 8.0-8.8 (`can_auto_enable_marlin_fp8`). vLLM 0.24.0 registers `Grok1ForCausalLM`, supports
pipeline parallelism for it, and its loader reads each expert tensor by name (no stitching of the 8 slices).

SGLang's memory, read in the 0.5.23 wheel the course pins: with `--quantization fp8` on the bf16 checkpoint it builds
every weight in bf16 on the GPU and quantizes them to FP8 only once all are loaded
(`layers/quantization/fp8.py`: `create_weights` takes the checkpoint's dtype unless the checkpoint is already FP8;
`model_loader/loader.py`: `DefaultModelLoader.load_weights_and_postprocess` loads every weight, then runs
`process_weights_after_loading` module by module), so each GPU must first hold its bf16 slice. Serving, it keeps
weights and KV cache within its default `--mem-fraction-static` of the GPU (`sglang_mem_fraction_static`). vLLM 0.24.0
materialises and quantizes its FP8 weights layer by layer (`Fp8PerTensorOnlineMoEMethod`, meta device), so its peak
is the FP8 size: its route keeps the course's rule (`route.GPU_USABLE`).
"""

from __future__ import annotations

from dataclasses import replace

from .. import engines
from ..engine_memory import (SGLANG_MEMORY_SOURCE, SGLANG_MEMORY_TIERS,  # noqa: F401  (re-exported)
                             sglang_mem_fraction_static)
from ..errors import CourseError
from ..units import GFLOPS, TFLOPS, GiB
from .machine import Machine
from .route import GPU_USABLE, PREFILL_BATCH, RAM_USABLE, Memory, Placement, Route, gb, spread_time
from .communication import bytes_sent_per_gpu
from .weights import LABELS, PER_LAYER, Weights, engine_weights, grok2_config, grok2_plan

RELEASED_TP = engines.RELEASED_TP
VLLM_SERIES = ".".join(engines.VLLM_VERSION.split(".")[:2])  # 0.24: the last series that serves Grok 2
HEAD_NODE = "HEAD_NODE_IP:5000"  # node 0's address and a free port, the same on both nodes
CONVERTED_PATH = "/local/grok-2-converted"  # where the commands expect helpers.grok2.convert_released_checkpoint's copy


def _sglang_loads(route: Route, machine: Machine, tp: int) -> bool:
    """SGLang quantizes to FP8 after loading (module docstring): each GPU first holds its bf16 slice, which must fit
    the course's GPU rule. Adds the arithmetic to route.why; False (and the route not fitting) when it does not fit."""
    gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
    bf16 = engine_weights("bf16").total / tp
    usable = GPU_USABLE * gpu.memory_bytes
    ok = bf16 <= usable
    route.why.append(f"loading: SGLang {engines.SGLANG_VERSION} builds the weights in bf16 and quantizes them to FP8 "
                     f"only once all are loaded, so each GPU first holds its bf16 slice: bf16 "
                     f"{gb(engine_weights('bf16').total)} / {tp} = {gb(bf16)} {'<=' if ok else '>'} {gb(usable)} "
                     f"usable ({GPU_USABLE:.0%} of {gpu.name})")
    route.fits = route.fits and ok
    return ok


def _no_cuda(machine: Machine) -> str | None:
    if machine.apple:
        return "needs NVIDIA (or AMD) GPUs; a Mac's GPU runs Metal, not CUDA"
    if not machine.gpus:
        return "needs GPUs; this machine has none"
    return None


def _tp_bytes_sent(tp: int) -> float:
    """Bytes each GPU sends per token for tensor parallelism: the course's one formula (`communication`), the same
    that lesson 02 checks against the bytes its ranks really sent (2 all-reduces per layer, the embedding's, and the
    logits' all-gather, in bf16)."""
    return bytes_sent_per_gpu(grok2_config(), tp)


def _tensor_parallel(route: Route, machine: Machine, weights: Weights, tp: int, nodes: int = 1,
                     sglang: bool = False) -> Route:
    """Fill in a tensor-parallel route: every class split evenly over `tp` identical GPUs that read in parallel. Each
    GPU may fill the course's GPU_USABLE share, or for SGLang its own default --mem-fraction-static."""
    gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
    context, shape = route.context, weights.shape
    # each rank keeps the keys and values of its KV heads; beyond 8 ranks the 8 KV heads are replicated
    kv_split = min(tp, shape.kv_heads)
    kv_per_gpu = shape.kv_bytes(context) / kv_split
    kv = kv_per_gpu * tp  # all ranks together
    per_gpu = weights.total / tp + kv_per_gpu
    share = sglang_mem_fraction_static(gpu.memory_bytes, tp) if sglang else GPU_USABLE
    rule = f"SGLang's default --mem-fraction-static {share:.3f} at TP {tp}" if sglang else f"{share:.0%}"
    usable = share * gpu.memory_bytes
    fits = per_gpu <= usable
    route.why.append(f"{weights.name} weights {gb(weights.total)} / {tp} GPUs = {gb(weights.total / tp)} per GPU, + "
                     f"KV cache of {context:,} tokens {gb(shape.kv_bytes(context))} / {kv_split} = {gb(kv_per_gpu)}"
                     + (f" (the {shape.kv_heads} KV heads are copied beyond {shape.kv_heads} ranks)"
                        if tp > shape.kv_heads else "")
                     + f": {gb(per_gpu)} {'<=' if fits else '>'} {gb(usable)} usable ({rule} of {gpu.name})")
    route.fits = route.fits and fits
    where = f"GPU memory ({tp} x {gpu.name}, read in parallel)"
    route.placement = [Placement(LABELS[name], where, size, name) for name, size in weights.bytes_by_class.items()]
    route.placement.append(Placement(f"KV cache ({context:,} tokens)", where, kv, "kv_cache"))
    route.capacities[where] = tp * usable
    route.memories = [Memory(where, "gpu", tp * gpu.memory_bandwidth, route.reads(where), weights.total + kv,
                             tp * usable)]
    per_node = tp // nodes
    if per_node > 1:
        route.memories.append(Memory(f"{gpu.link} (all-reduces and all-gather)", "nvlink", gpu.link_bandwidth,
                                     _tp_bytes_sent(per_node)))
    if nodes > 1:
        network = machine.network
        route.memories.append(Memory(f"{network.name} (all-reduces and all-gather across nodes)", "network",
                                     network.bandwidth, _tp_bytes_sent(nodes)))
    route.gpus_used, route.nodes = per_node, nodes
    route.layout = {"tp": tp, "nodes": nodes}
    rate = gpu.matrix_rate(weights.operands)
    compute = shape.flops_per_token(context) * PREFILL_BATCH / (tp * rate)
    reading = (weights.total + kv) / (tp * gpu.memory_bandwidth)
    route.prefill_tok_s = PREFILL_BATCH / max(compute, reading)
    operands = "FP8" if rate > gpu.bf16_flops else "16-bit"
    route.prefill_why = (f"{PREFILL_BATCH}-token steps at {tp} x {rate / TFLOPS:,.0f} TFLOP/s ({operands} matrices): "
                         f"{'arithmetic' if compute >= reading else 'reading the weights'} bounds it")
    return route


def _fp8_note(machine: Machine, engine: str) -> str:
    gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
    if gpu.fp8 == "native":
        return f"{gpu.name} has FP8 tensor cores: {engine} multiplies in FP8 (W8A8)"
    if gpu.fp8 == "weight-only":
        return (f"{gpu.name} has no FP8 tensor cores: {engine} keeps FP8 weights and multiplies in 16 bits "
                "(FP8 Marlin, W8A16): the memory saving stays, the arithmetic runs at the 16-bit rate")
    return f"{gpu.name} cannot run FP8"


def _released_disk(route: Route, copies: int = 1, why: str = "the released bf16 checkpoint (42 files)") -> None:
    route.disk_bytes = copies * grok2_plan().weight_bytes("bf16")
    route.disk_why = why


def sglang_route(machine: Machine, context: int) -> Route:
    """SGLang, FP8 quantized while loading, tensor parallelism 8 on the released layout (the model card's command)."""
    weights = engine_weights("fp8")
    route = Route("sglang-fp8-tp8", "SGLang", "SGLang, FP8, TP 8 (official)", weights, True, [], context=context)
    _released_disk(route)
    load_peak = engine_weights("bf16").total / RELEASED_TP
    route.needs = [f"sglang=={engines.SGLANG_VERSION} (the version the command is checked against; the model card asks "
                   "for >= 0.5.1) with --attention-backend triton (the model card's command)",
                   f"8 identical GPUs (the released expert files are split for TP 8): the model card asks for more than "
                   f"40 GB each; SGLang {engines.SGLANG_VERSION} needs room for each GPU's bf16 slice, "
                   f"{gb(load_peak)}, while it loads (it quantizes to FP8 afterwards)"]
    problem = _no_cuda(machine)
    if problem:
        return route.not_applicable(f"SGLang {problem}")
    if machine.gpu_count < RELEASED_TP:
        route.fits = False
        route.why.append(f"the released files are split for tensor parallelism {RELEASED_TP} (each rank reads its own "
                         f"expert slice) and this machine has {machine.gpu_count} GPU(s): see the two-node route")
        return route
    if not machine.homogeneous:
        route.notes.append("mixed GPUs: tensor parallelism runs every rank at the pace and size of the smallest")
    route.notes.append(_fp8_note(machine, "SGLang"))
    if not _sglang_loads(route, machine, RELEASED_TP):
        return route
    _tensor_parallel(route, machine, weights, RELEASED_TP, sglang=True)
    if machine.gpu_count > RELEASED_TP:
        route.notes.append(f"uses {RELEASED_TP} of the {machine.gpu_count} GPUs")
    if route.fits:
        gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
        deployment = engines.plan_deployment(gpu_memory_gib=gpu.memory_bytes / GiB, gpus=RELEASED_TP, precision="fp8",
                                             context_tokens=context)
        route.command = engines.sglang_command(deployment)
    return route


def _vllm_tp(machine: Machine) -> int:
    """vLLM's tensor parallelism for Grok 2: a power of two that divides the 8 KV heads (and so the 64 heads)."""
    tp = 1
    while tp * 2 <= min(machine.gpu_count, 8):
        tp *= 2
    return tp


def vllm_route(machine: Machine, context: int) -> Route:
    """vLLM 0.24.x, FP8, on a converted checkpoint (whole experts), the largest TP the node allows."""
    weights = engine_weights("fp8")
    route = Route(f"vllm-{VLLM_SERIES}-fp8", f"vLLM {VLLM_SERIES}.x", f"vLLM {VLLM_SERIES}.x, FP8 (converted checkpoint)",
                  weights, True, [], context=context)
    _released_disk(route, 2, "the released checkpoint plus its converted copy (the original can go afterwards)")
    route.needs = [f"vllm=={engines.VLLM_VERSION} (the 0.24 series is the last that serves Grok 2: later releases list "
                   "Grok1ForCausalLM as previously supported and refuse it)", "tiktoken (vLLM reads tokenizer.tok.json itself)",
                   "the checkpoint converted to whole experts: helpers.grok2.convert_released_checkpoint(src, dst) "
                   "(vLLM 0.24.0's loader reads each expert by name and does not stitch the 8 slices)"]
    route.notes.append("vLLM does not implement Grok 2's attention temperature, and caps logits before the 0.5 scale "
                       "(facts 4.6): answers can differ slightly from SGLang's")
    problem = _no_cuda(machine)
    if problem:
        return route.not_applicable(f"vLLM {problem}")
    tp = _vllm_tp(machine)
    _tensor_parallel(route, machine, weights, tp)
    route.notes.append(_fp8_note(machine, "vLLM"))
    if route.fits:
        gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
        try:
            deployment = engines.plan_deployment(gpu_memory_gib=gpu.memory_bytes / GiB, gpus=machine.gpu_count,
                                                 precision="fp8", context_tokens=context, released_layout=False,
                                                 engine="vllm")
        except CourseError as error:  # the planner and the engine's own plan disagree: say so rather than guess
            route.notes.append(f"engines.plan_deployment refused: {error.problem}")
        else:
            deployment = replace(deployment, tensor_parallel=tp, weights_per_gpu_gb=deployment.weights_gb / tp)
            route.command = engines.vllm_command(deployment, CONVERTED_PATH)
    return route


def two_node_route(machine: Machine, context: int, single: Route) -> Route | None:
    """SGLang over this node and a second one like it, tensor parallelism across both (SGLang's Grok model has no
    pipeline parallelism). TP 8 keeps the released files; any other TP runs on the converted checkpoint, with SGLang
    told to cut each rank's expert slice itself (engines.SGLANG_REPACK)."""
    if _no_cuda(machine) or single.fits:
        return None
    weights = engine_weights("fp8")
    tp = min(2 * machine.gpu_count, 16)
    route = Route("sglang-fp8-2-nodes", "SGLang", f"SGLang, FP8, 2 nodes, TP {tp}", weights, True, [],
                  context=context)
    network = machine.network
    if network is None:
        from ..accelerators import ETHERNET_100G

        network = ETHERNET_100G
        route.notes.append("no network given for this machine: the bound assumes 100 Gb Ethernet between the nodes")
    machine = replace(machine, network=network)
    released = tp == RELEASED_TP
    if not released:
        route.needs.append(f"a re-packed checkpoint for TP {tp}: {engines.SGLANG_REPACK}; its command serves "
                           f"{CONVERTED_PATH}. On the released files SGLang {engines.SGLANG_VERSION}'s grok.py has "
                           "each rank read only the files of its own rank number: at TP < 8 a rank silently loads part "
                           "of its experts (reported in SGLang PR #36438, open), at TP 16 ranks 8-15 find none")
    else:
        route.needs.append("the released files (TP 8: four GPUs per node)")
    route.needs.append("both nodes see the checkpoint at the same path; node 0's address in --dist-init-addr")
    if tp % 8 and 8 % tp:
        route.fits = False
        route.why.append(f"TP {tp} does not divide Grok 2's 8 KV heads")
        return route
    _released_disk(route, 1 if released else 2, "the released checkpoint on each node" if released else
                   "the released checkpoint and the re-packed copy, on each node")
    if not _sglang_loads(route, machine, tp):
        return route
    _tensor_parallel(route, machine, weights, tp, nodes=2, sglang=True)
    if route.fits:
        gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
        deployment = engines.plan_deployment(gpu_memory_gib=gpu.memory_bytes / GiB, gpus=tp, precision="fp8",
                                             context_tokens=context, released_layout=released)
        deployment = replace(deployment, tensor_parallel=tp, weights_per_gpu_gb=deployment.weights_gb / tp)
        model_path = "/local/grok-2" if released else CONVERTED_PATH
        route.command = [engines.sglang_command(deployment, model_path, nnodes=2, node_rank=rank,
                                                dist_init_addr=HEAD_NODE) for rank in range(2)]
    return route


# ----------------------------------------------------------------------------------------- the transformers path


def transformers_route(machine: Machine, precision: str, context: int) -> Route:
    """The course's own path: helpers.load_model / load_released_checkpoint with device_map="auto". Whole layers fill
    the GPUs in order, then system RAM (copied to the GPU for each forward pass, over PCIe), then NVMe (bf16 only;
    read from disk for each pass)."""
    weights = engine_weights(precision)
    label = {"bf16": "bf16", "int8": "int8 (bitsandbytes)", "nf4": "nf4 (bitsandbytes)"}[precision]
    route = Route(f"transformers-{precision}", "transformers", f"transformers, {label}, device_map", weights, True,
                  [], context=context)
    _released_disk(route, why="the released checkpoint, streamed into the model tensor by tensor")
    kv = weights.shape.kv_bytes(context)
    if machine.apple or not machine.gpus:
        return _transformers_without_cuda(route, machine, weights, kv)
    devices = [(GPU_USABLE * g.memory_bytes, g.memory_bandwidth) for g in machine.gpus]
    gpu_room = max(0.0, sum(c for c, _ in devices) - kv)
    ram_room = RAM_USABLE * machine.ram_bytes
    tiers = _fill_in_order(weights, (gpu_room, ram_room))
    on_gpu, in_ram, on_disk = (sum(b for _, _, b in tier) for tier in tiers)
    route.why.append(f"{precision} weights {gb(weights.total)}, whole layers in order: {gb(on_gpu)} on "
                     f"{machine.gpu_count} GPU(s) ({gb(gpu_room)} usable after the KV cache of {context:,} tokens, "
                     f"{gb(kv)})"
                     + (f", {gb(in_ram)} in RAM (of {gb(ram_room)} usable)" if in_ram else "")
                     + (f", {gb(on_disk)} left over" if on_disk > 0 else ""))
    if on_disk > 0 and precision != "bf16":
        route.fits = False
        route.why.append("8/4-bit layers cannot be offloaded to disk (load_released_checkpoint refuses): more GPU "
                         "memory or RAM is needed")
    elif on_disk > 0 and not machine.disk_bandwidth:
        route.fits = False
        route.why.append("the rest would go to disk, whose read rate is not known for this machine")
    elif on_disk > 0 and on_disk > machine.disk_bytes - route.disk_bytes:
        route.fits = False
        route.why.append(f"the disk cannot hold the offloaded {gb(on_disk)} beside the checkpoint")
    elif in_ram == 0 and on_disk == 0:
        route.why.append(f"margin on the GPUs: {gb(gpu_room - on_gpu)} (weights + KV cache within {GPU_USABLE:.0%} of "
                         "each GPU)")
    gpu_name = f"GPU memory ({machine.gpu_summary()}, layers in sequence)"
    ram_name = f"system RAM ({machine.ram_name})"
    disk_name = f"NVMe ({machine.disk_name})"
    host = machine.gpus[0]
    route.placement = _placements(tiers[0], gpu_name, weights) + [
        Placement(f"KV cache ({context:,} tokens)", gpu_name, kv, "kv_cache")]
    route.capacities[gpu_name] = gpu_room + kv
    route.memories.append(Memory(gpu_name, "gpu", 1 / spread_time(1.0, devices), route.reads(gpu_name), on_gpu + kv,
                                 gpu_room + kv))
    if in_ram:
        route.placement += _placements(tiers[1], ram_name, weights)
        route.capacities[ram_name] = ram_room
    if on_disk > 0 and route.fits:
        route.placement += _placements(tiers[2], disk_name, weights)
        route.capacities[disk_name] = machine.disk_bytes
        route.disk_bytes += on_disk
        route.disk_why += " + the offload folder"
        route.needs.append("transformers' disk offload (from_pretrained(..., device_map='auto', offload_folder=...)) "
                           "on a converted checkpoint")
    if in_ram or on_disk > 0:
        # accelerate's hooks copy an offloaded layer's weights to the GPU when the layer runs: a copy out of RAM goes
        # at the slower of RAM and PCIe; a layer on disk is first read from it, then copied (one after the other)
        copy = min(machine.ram_bandwidth or host.host_link_bandwidth, host.host_link_bandwidth)
        route.memories.append(Memory(f"system RAM -> GPU over {host.host_link} (every pass)", "pcie", copy,
                                     route.reads(ram_name) + route.reads(disk_name), in_ram, ram_room))
        route.notes.append("offloaded layers are copied to the GPU on every forward pass (accelerate's hooks): each "
                           "token pays for their active bytes over PCIe, and for those on disk a read first")
    if on_disk > 0 and route.fits:
        route.memories.append(Memory(f"NVMe read ({machine.disk_name}, every pass)", "disk", machine.disk_bandwidth,
                                     route.reads(disk_name), on_disk))
    if precision != "bf16":
        route.needs.append("bitsandbytes with CUDA kernels (lesson 03)")
    rate = sum(g.bf16_flops for g in machine.gpus) / machine.gpu_count
    compute = weights.shape.flops_per_token(context) * PREFILL_BATCH / rate
    crossing = (in_ram + on_disk) / host.host_link_bandwidth + (on_disk / machine.disk_bandwidth if on_disk > 0
                                                                 and machine.disk_bandwidth else 0.0)
    route.prefill_tok_s = PREFILL_BATCH / max(compute, crossing)
    route.prefill_why = (f"{PREFILL_BATCH}-token steps, layers in sequence at {rate / TFLOPS:,.0f} TFLOP/s"
                         + (", offloaded weights over PCIe once per step" if crossing else ""))
    route.gpus_used = machine.gpu_count
    return route


def _units_in_order(weights: Weights) -> list[list[tuple[str, int | None, float]]]:
    """The model's modules as accelerate's device_map="auto" places them, whole: the embeddings, each decoder layer
    (never split: attention, dense MLP, router, experts, norms), then the LM head; each a list of
    (class, layer, bytes)."""
    b = weights.bytes_by_class
    layers = [[(name, i, weights.layers_of(name)[i]) for name in PER_LAYER] for i in range(weights.shape.layers)]
    return [[("embeddings", None, b["embeddings"])], *layers, [("lm_head", None, b["lm_head"])]]


def _fill_in_order(weights: Weights, rooms: tuple[float, ...]) -> list[list[tuple[str, int | None, float]]]:
    """accelerate's order: each unit goes to the current device if it fits there, else to the next one, never back.
    One list of (class, layer, bytes) per room given, plus a last one for what is left (the disk)."""
    tiers = [[] for _ in range(len(rooms) + 1)]
    tier, left = 0, list(rooms) + [float("inf")]
    for unit in _units_in_order(weights):
        size = sum(nbytes for _, _, nbytes in unit)
        while size > left[tier]:
            tier += 1
        tiers[tier] += unit
        left[tier] -= size
    return tiers


def _placements(parts: list[tuple[str, int | None, float]], where: str, weights: Weights) -> list[Placement]:
    """One Placement per class in `parts`, naming the layers it covers where that is not all of them."""
    placed = []
    for name in weights.bytes_by_class:
        mine = [(layer, nbytes) for cls, layer, nbytes in parts if cls == name]
        if not mine:
            continue
        layers = [layer for layer, _ in mine if layer is not None]
        label = LABELS[name]
        if layers and len(layers) < weights.shape.layers:
            label += f", layers {min(layers)}-{max(layers)}"
        placed.append(Placement(label, where, sum(nbytes for _, nbytes in mine), name))
    return placed


def _transformers_without_cuda(route: Route, machine: Machine, weights: Weights, kv: float) -> Route:
    name = "unified memory (MPS)" if machine.apple else f"system RAM ({machine.ram_name})"
    if weights.name != "bf16":
        return route.not_applicable("bitsandbytes' 8/4-bit kernels need a CUDA GPU here (lesson 03): on "
                                    + ("a Mac use GGUF with llama.cpp (Metal)" if machine.apple else
                                       "a CPU use GGUF with llama.cpp"))
    room = RAM_USABLE * machine.ram_bytes
    need = weights.total + kv
    route.fits = need <= room
    route.why.append(f"bf16 weights {gb(weights.total)} + KV cache {gb(kv)} = {gb(need)} "
                     f"{'<=' if route.fits else '>'} {gb(room)} usable of {gb(machine.ram_bytes)} ({name})")
    bandwidth = machine.unified.memory_bandwidth if machine.apple else machine.ram_bandwidth
    route.placement = [Placement(LABELS[c], name, b, c) for c, b in weights.bytes_by_class.items()]
    route.placement.append(Placement("KV cache", name, kv, "kv_cache"))
    route.memories = [Memory(name, "unified" if machine.apple else "ram", bandwidth, route.reads(name), need, room)]
    route.capacities[name] = room
    if machine.cpu_flops and not machine.apple:
        route.prefill_tok_s = PREFILL_BATCH / (weights.shape.flops_per_token() * PREFILL_BATCH / machine.cpu_flops)
        route.prefill_why = f"the CPU's measured {machine.cpu_flops / GFLOPS:,.0f} GFLOP/s"
    else:
        route.prefill_why = ("omitted: no matrix rate is known for this " + ("Mac's GPU" if machine.apple else "CPU")
                             + " (this_machine() measures one)")
    return route


__all__ = ["sglang_route", "vllm_route", "two_node_route", "transformers_route", "sglang_mem_fraction_static",
           "SGLANG_MEMORY_SOURCE", "SGLANG_MEMORY_TIERS", "RELEASED_TP", "VLLM_SERIES"]
