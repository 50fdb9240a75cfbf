"""The GPU-server routes: SGLang FP8 at tensor parallelism 8 on the released files (the official one), vLLM 0.24.x
(the last release that serves Grok 2), SGLang over two nodes, and the course's own transformers path (bf16 / int8 /
nf4 with `device_map`, offloading to RAM over PCIe and to NVMe).

Facts (docs/grok2-facts.md): the official command and TP 8 (3.1, 3.2); vLLM's Grok 2 support, its removal after
0.24.0 and FP8 weight-only on compute capability 7.5-8.6 (3.3, 5.1, 8). Read in the engines' own code: SGLang 0.5.23's
`grok.py` globs each rank's `*-TP-{rank:03d}.safetensors`, so on the released files TP must be 8, and its Grok model
has no pipeline parallelism, so a second node extends tensor parallelism; SGLang turns on FP8 Marlin (weight-only) on
compute capability 8.0-8.8 (`can_auto_enable_marlin_fp8`). vLLM 0.24.0 registers `Grok1ForCausalLM`, supports
pipeline parallelism for it, and its loader reads each expert tensor by name (no stitching of the 8 slices).
"""

from __future__ import annotations

from dataclasses import replace

from .. import engines
from ..errors import CourseError
from ..units import GB
from .machine import Machine
from .route import GPU_USABLE, PREFILL_BATCH, RAM_USABLE, Memory, Placement, Route, gb, spread_time
from .weights import LABELS, Weights, engine_weights, grok2_plan

RELEASED_TP = engines.RELEASED_TP
VLLM_SERIES = ".".join(engines.VLLM_VERSION.split(".")[:2])  # 0.24: the last series that serves Grok 2
HEAD_NODE = "HEAD_NODE_IP:5000"  # node 0's address and a free port, the same on both nodes


def _no_cuda(machine: Machine) -> str | None:
    if machine.apple:
        return "needs NVIDIA (or AMD) GPUs; a Mac's GPU runs Metal, not CUDA"
    if not machine.gpus:
        return "needs GPUs; this machine has none"
    return None


def _allreduce_bytes(weights: Weights, tp: int) -> float:
    """Bytes each GPU sends per token for tensor parallelism: two all-reduces per layer (after attention and after
    the MLP + experts) of one hidden vector in bf16, ring algorithm (2 (n-1)/n of the vector)."""
    shape = weights.shape
    return 2 * shape.layers * shape.hidden * 2 * 2 * (tp - 1) / tp


def _tensor_parallel(route: Route, machine: Machine, weights: Weights, tp: int, nodes: int = 1) -> Route:
    """Fill in a tensor-parallel route: every class split evenly over `tp` identical GPUs that read in parallel."""
    gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
    context, shape = route.context, weights.shape
    # each rank keeps the keys and values of its KV heads; beyond 8 ranks the 8 KV heads are replicated
    kv_split = min(tp, shape.kv_heads)
    kv_per_gpu = shape.kv_bytes(context) / kv_split
    kv = kv_per_gpu * tp  # all ranks together
    per_gpu = weights.total / tp + kv_per_gpu
    usable = GPU_USABLE * gpu.memory_bytes
    fits = per_gpu <= usable
    route.why.append(f"{weights.name} weights {gb(weights.total)} / {tp} GPUs = {gb(weights.total / tp)} per GPU, + "
                     f"KV cache of {context:,} tokens {gb(shape.kv_bytes(context))} / {kv_split} = {gb(kv_per_gpu)}"
                     + (f" (the {shape.kv_heads} KV heads are copied beyond {shape.kv_heads} ranks)"
                        if tp > shape.kv_heads else "")
                     + f": {gb(per_gpu)} {'<=' if fits else '>'} {gb(usable)} usable ({GPU_USABLE:.0%} of {gpu.name})")
    route.fits = route.fits and fits
    where = f"GPU memory ({tp} x {gpu.name}, read in parallel)"
    route.placement = [Placement(LABELS[name], where, size) for name, size in weights.bytes_by_class.items()]
    route.placement.append(Placement(f"KV cache ({context:,} tokens)", where, kv))
    route.capacities[where] = tp * usable
    reads = weights.active + kv
    route.memories = [Memory(where, "gpu", tp * gpu.memory_bandwidth, reads, weights.total + kv, tp * usable)]
    per_node = tp // nodes
    if per_node > 1:
        route.memories.append(Memory(f"{gpu.link} (all-reduce, 2 per layer)", "nvlink", gpu.link_bandwidth,
                                     _allreduce_bytes(weights, per_node)))
    if nodes > 1:
        network = machine.network
        route.memories.append(Memory(f"{network.name} (all-reduce across nodes)", "network", network.bandwidth,
                                     _allreduce_bytes(weights, nodes)))
    route.gpus_used, route.nodes = per_node, nodes
    route.layout = {"tp": tp, "nodes": nodes}
    rate = gpu.matrix_rate(weights.operands)
    compute = shape.flops_per_token(context) * PREFILL_BATCH / (tp * rate)
    reading = (weights.total + kv) / (tp * gpu.memory_bandwidth)
    route.prefill_tok_s = PREFILL_BATCH / max(compute, reading)
    operands = "FP8" if rate > gpu.bf16_flops else "16-bit"
    route.prefill_why = (f"{PREFILL_BATCH}-token steps at {tp} x {rate / 1e12:,.0f} TFLOP/s ({operands} matrices): "
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
    route.needs = ["SGLang >= 0.5.1 with --attention-backend triton (the model card's command)",
                   "8 identical GPUs of more than 40 GB (the released expert files are split for TP 8)"]
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
    _tensor_parallel(route, machine, weights, RELEASED_TP)
    route.notes.append(_fp8_note(machine, "SGLang"))
    if machine.gpu_count > RELEASED_TP:
        route.notes.append(f"uses {RELEASED_TP} of the {machine.gpu_count} GPUs")
    if route.fits:
        gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
        deployment = engines.plan_deployment(gpu_memory_gb=gpu.memory_bytes / GB, gpus=RELEASED_TP, precision="fp8",
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
            deployment = engines.plan_deployment(gpu_memory_gb=gpu.memory_bytes / GB, gpus=machine.gpu_count,
                                                 precision="fp8", context_tokens=context, released_layout=False)
        except CourseError as error:  # the planner and the engine's own plan disagree: say so rather than guess
            route.notes.append(f"engines.plan_deployment refused: {error.problem}")
        else:
            deployment = replace(deployment, tensor_parallel=tp, weights_per_gpu_gb=deployment.weights_gb / tp)
            route.command = engines.vllm_command(deployment, "/local/grok-2-converted")
    return route


def two_node_route(machine: Machine, context: int, single: Route) -> Route | None:
    """SGLang over this node and a second one like it, tensor parallelism across both (SGLang's Grok model has no
    pipeline parallelism). TP 8 keeps the released files; any other TP needs the experts re-sliced."""
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
        route.needs.append(f"a re-packed checkpoint: the expert files re-sliced for TP {tp} (the course writes that "
                           f"layout from a loaded model: helpers.grok2.save_in_released_layout(model, folder, "
                           f"tp_size={tp}); huihui-ai/grok-2 is such a copy, run at TP 16 on Ascend NPUs). On the "
                           "released files SGLang at TP < 8 silently loaded incomplete experts (SGLang PR #36438), and "
                           "SGLang 0.5.23's grok.py still has each rank read only the files of its own rank number: "
                           "at TP 16 ranks 8-15 find none")
    else:
        route.needs.append("the released files (TP 8: four GPUs per node)")
    route.needs.append("both nodes see the checkpoint at the same path; node 0's address in --dist-init-addr")
    if tp % 8 and 8 % tp:
        route.fits = False
        route.why.append(f"TP {tp} does not divide Grok 2's 8 KV heads")
        return route
    _tensor_parallel(route, machine, weights, tp, nodes=2)
    _released_disk(route, 1 if released else 2, "the released checkpoint on each node" if released else
                   "the released checkpoint and the re-packed copy, on each node")
    if route.fits:
        gpu = min(machine.gpus, key=lambda g: g.memory_bytes)
        deployment = engines.plan_deployment(gpu_memory_gb=gpu.memory_bytes / GB, gpus=tp, precision="fp8",
                                             context_tokens=context, released_layout=released)
        deployment = replace(deployment, tensor_parallel=tp, weights_per_gpu_gb=deployment.weights_gb / tp)
        route.command = [engines.sglang_command(deployment, nnodes=2, node_rank=rank, dist_init_addr=HEAD_NODE)
                         for rank in range(2)]
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
    on_gpu = min(weights.total, gpu_room)
    in_ram = min(weights.total - on_gpu, ram_room)
    on_disk = weights.total - on_gpu - in_ram
    route.why.append(f"{precision} weights {gb(weights.total)}: {gb(on_gpu)} on {machine.gpu_count} GPU(s) "
                     f"({gb(gpu_room)} usable after the KV cache of {context:,} tokens, {gb(kv)})"
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
    share = {where: size / weights.total for where, size in (("gpu", on_gpu), ("ram", in_ram), ("disk", on_disk))}
    active = weights.active
    gpu_name = f"GPU memory ({machine.gpu_summary()}, layers in sequence)"
    host = machine.gpus[0]
    route.memories.append(Memory(gpu_name, "gpu", 1 / spread_time(1.0, devices), active * share["gpu"] + kv,
                                 on_gpu + kv, gpu_room + kv))
    route.placement.append(Placement(f"{share['gpu']:.0%} of the layers + KV cache", gpu_name, on_gpu + kv))
    route.capacities[gpu_name] = gpu_room + kv
    if in_ram:
        ram_name = f"system RAM ({machine.ram_name})"
        route.placement.append(Placement(f"{share['ram']:.0%} of the layers", ram_name, in_ram))
        route.capacities[ram_name] = ram_room
    if on_disk > 0 and route.fits:
        disk_name = f"NVMe ({machine.disk_name})"
        route.placement.append(Placement(f"{share['disk']:.0%} of the layers", disk_name, on_disk))
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
                                     active * (share["ram"] + share["disk"]), in_ram, ram_room))
        route.notes.append("offloaded layers are copied to the GPU on every forward pass (accelerate's hooks): each "
                           "token pays for their active bytes over PCIe, and for those on disk a read first")
    if on_disk > 0 and route.fits:
        route.memories.append(Memory(f"NVMe read ({machine.disk_name}, every pass)", "disk", machine.disk_bandwidth,
                                     active * share["disk"], on_disk))
    if precision != "bf16":
        route.needs.append("bitsandbytes with CUDA kernels (lesson 03)")
    rate = sum(g.bf16_flops for g in machine.gpus) / machine.gpu_count
    compute = weights.shape.flops_per_token(context) * PREFILL_BATCH / rate
    crossing = (in_ram + on_disk) / host.host_link_bandwidth + (on_disk / machine.disk_bandwidth if on_disk > 0
                                                                 and machine.disk_bandwidth else 0.0)
    route.prefill_tok_s = PREFILL_BATCH / max(compute, crossing)
    route.prefill_why = (f"{PREFILL_BATCH}-token steps, layers in sequence at {rate / 1e12:,.0f} TFLOP/s"
                         + (", offloaded weights over PCIe once per step" if crossing else ""))
    route.gpus_used = machine.gpu_count
    return route


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
    route.memories = [Memory(name, "unified" if machine.apple else "ram", bandwidth, weights.active + kv, need, room)]
    route.placement = [Placement(LABELS[c], name, b) for c, b in weights.bytes_by_class.items()]
    route.placement.append(Placement("KV cache", name, kv))
    route.capacities[name] = room
    if machine.cpu_flops and not machine.apple:
        route.prefill_tok_s = PREFILL_BATCH / (weights.shape.flops_per_token() * PREFILL_BATCH / machine.cpu_flops)
        route.prefill_why = f"the CPU's measured {machine.cpu_flops / 1e9:,.0f} GFLOP/s"
    return route


__all__ = ["sglang_route", "vllm_route", "two_node_route", "transformers_route", "RELEASED_TP", "VLLM_SERIES"]
