"""The machine planner (helpers.machines): every preset's table, the arithmetic behind each "fits", the decode bound
as bytes / bandwidth summed over memories, llama.cpp's hybrid layout, the published measurements beside their bounds,
and the bad inputs (an impossible machine, an unknown GPU, numbers out of range).

Expected values are recomputed here from the datasheet entries and the sizes by class, independently of the route
code, so a wrong formula in a route fails a test.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from fnmatch import fnmatch

import pytest

from helpers import accelerators as hw
from helpers import engines, gguf, machines
from helpers.errors import CourseError
from helpers.machines.communication import bytes_sent_per_gpu
from helpers.machines.communication import project_decode
from helpers.machines.gpu_routes import (CONVERTED_PATH, sglang_mem_fraction_static, sglang_route, transformers_route,
                                         two_node_route, vllm_route)
from helpers.machines.llama_routes import (LOCAL_DIR, cpu_route, fastest_llama_cpp, hybrid_route, hybrid_split,
                                           llama_cpp_options)
from helpers.machines.route import GPU_USABLE, RAM_USABLE, sequential_bandwidth
from helpers.machines.weights import (APPROXIMATE_MARGIN, CLASSES, PER_LAYER, engine_weights, gguf_quants,
                                      gguf_weights, grok2_config, grok2_plan)
from helpers.paths import REPO_ROOT
from helpers.units import GB, GiB, format_bytes

CONTEXT = 8192


@pytest.fixture(scope="module")
def plans():
    return {name: machines.plan_routes(name) for name in machines.PRESETS}


def kv(context=CONTEXT):
    return machines.grok2_shape().kv_bytes(context)


# ------------------------------------------------------------------------------------------ datasheets, weights


def test_every_datasheet_entry_names_its_source():
    for entry in [*hw.ACCELERATORS.values(), *hw.APPLE_CHIPS.values(), *hw.SYSTEM_MEMORY.values(), hw.NVME_GEN4,
                  hw.INFINIBAND_NDR_8, hw.INFINIBAND_HDR_8, hw.ETHERNET_100G]:
        assert "http" in entry.source, entry


def test_gpu_memory_is_binary_as_the_driver_reports_it():
    """An "80 GB" H100 holds 80 GiB: the course's own H100 reported 85.0e9 bytes (a little under 80 GiB, what the
    driver keeps aside), more than 80e9. The same holds for every memory chip the course lists."""
    assert hw.H100_SXM.memory_bytes == 80 * GiB and hw.H200_SXM.memory_bytes == 141 * GiB
    assert hw.T4.memory_bytes == 16 * GiB and hw.RTX_4090.memory_bytes == 24 * GiB
    assert hw.M2_ULTRA.memory_bytes == 192 * GiB
    machine = json.loads((REPO_ROOT / "benchmarks" / "results" / "lora-grok2-4b-cuda.json").read_text())["machine"]
    assert "H100 80GB" in machine["gpu"]
    measured = machine["gpu_memory_GB"] * GB
    assert 80e9 < measured <= hw.H100_SXM.memory_bytes and measured > 0.98 * hw.H100_SXM.memory_bytes


def test_memory_and_pcie_bandwidths_are_the_products_they_claim():
    assert hw.DDR5_5600_2CH.bandwidth == 2 * 8 * 5600e6
    assert hw.DDR4_3200_16CH.bandwidth == 16 * 8 * 3200e6
    assert hw.PCIE["PCIe 4.0 x16"] == pytest.approx(2 * hw.PCIE["PCIe 3.0 x16"])
    assert hw.RTX_3090.matrix_rate("int8") == hw.RTX_3090.int8_ops > hw.RTX_3090.bf16_flops
    assert hw.A100_SXM_80.matrix_rate("fp8") == hw.A100_SXM_80.bf16_flops  # weight-only FP8: 16-bit arithmetic
    assert hw.H100_SXM.matrix_rate("fp8") == hw.H100_SXM.fp8_flops > hw.H100_SXM.bf16_flops


def test_one_list_of_tensor_classes_for_every_planner():
    from helpers.memory import grok2_parameter_breakdown
    from helpers.model_parts import TENSOR_CLASSES

    assert tuple(grok2_parameter_breakdown(grok2_config())) == tuple(TENSOR_CLASSES) == CLASSES == gguf.CLASSES


@pytest.mark.parametrize("precision", ["bf16", "fp8", "int8", "nf4"])
def test_bytes_by_class_add_up_to_the_memory_planner(precision):
    weights = engine_weights(precision)
    assert set(weights.bytes_by_class) == set(CLASSES)
    assert weights.total == pytest.approx(grok2_plan().weight_bytes(precision), rel=1e-9)
    # a token reads everything but 6 of the 8 experts of each layer and all but one row of the embeddings
    unread = weights.experts * 6 / 8 + weights.bytes_by_class["embeddings"] * (1 - 1 / 131072)
    assert weights.active == pytest.approx(weights.total - unread)


def test_gguf_layers_add_up_to_the_classes():
    for quant in gguf_quants():
        weights = gguf_weights(quant)
        assert sum(weights.expert_layers) == pytest.approx(weights.experts)
        b = weights.bytes_by_class
        assert sum(weights.dense_layers) == pytest.approx(b["attention"] + b["dense_mlp"] + b["router"] + b["norms"],
                                                          abs=1e6)
        assert weights.stored >= weights.total
        # a published unsloth type stands for unsloth's file: exact only where that file is llama.cpp's own mix
        assert weights.exact == (not gguf.UNSLOTH_FILES[quant].dynamic), quant
        assert weights.fit_scale == (1.0 if weights.exact else 1.0 + APPROXIMATE_MARGIN)
    assert not gguf_weights("TQ1_0").exact and "grok-2-UD-TQ1_0" in gguf_weights("TQ1_0").note
    assert gguf.gguf_size(grok2_config(), "TQ1_0").exact  # llama.cpp's own TQ1_0 mix is exact


# -------------------------------------------------------------------------------------------- the presets


# Which routes fit each preset (8K-token context), at the quantization each llama.cpp route picks: the most precise
# file that fits. Written out so that a change in any datasheet figure, size or rule shows up here.
EXPECTED_FITS = {
    "24 GB GPU + 64 GB DDR5": {"transformers-bf16", "llama.cpp-hybrid-TQ1_0"},
    "24 GB GPU + 128 GB DDR5": {"transformers-bf16", "llama.cpp-hybrid-UD-IQ3_XXS", "llama.cpp-cpu-TQ1_0"},
    "24 GB GPU + 256 GB DDR5": {"transformers-bf16", "transformers-nf4", "llama.cpp-hybrid-UD-Q5_K_XL",
                                "llama.cpp-cpu-UD-Q5_K_XL"},
    "Mac Studio M2 Ultra 192 GB": {"llama.cpp-metal-IQ4_XS"},
    "Mac Studio M3 Ultra 512 GB": {"llama.cpp-metal-UD-Q5_K_XL"},
    "1 x H200": {"transformers-bf16", "transformers-int8", "transformers-nf4", "llama.cpp-gpu-UD-IQ3_XXS",
                 "llama.cpp-hybrid-UD-Q5_K_XL", "llama.cpp-cpu-UD-Q5_K_XL"},
    "2 x H100 80 GB": {"transformers-bf16", "transformers-int8", "transformers-nf4",
                       "llama.cpp-gpu-IQ4_XS", "llama.cpp-hybrid-UD-Q5_K_XL", "llama.cpp-cpu-UD-Q5_K_XL"},
    "8 x A100 80 GB": {"sglang-fp8-tp8", "vllm-0.24-fp8", "transformers-bf16", "transformers-int8", "transformers-nf4",
                       "llama.cpp-gpu-UD-Q5_K_XL", "llama.cpp-cpu-UD-Q5_K_XL"},
    "8 x H100 80 GB": {"sglang-fp8-tp8", "vllm-0.24-fp8", "transformers-bf16", "transformers-int8", "transformers-nf4",
                       "llama.cpp-gpu-UD-Q5_K_XL", "llama.cpp-cpu-UD-Q5_K_XL"},
    machines.PUBLISHED_RIG: {"transformers-bf16", "transformers-int8", "transformers-nf4", "llama.cpp-gpu-TQ1_0",
                             "llama.cpp-hybrid-UD-Q5_K_XL", "llama.cpp-cpu-UD-Q5_K_XL"},
}


def test_each_preset_fits_the_routes_expected(plans):
    assert set(EXPECTED_FITS) == set(plans)
    for name, plan in plans.items():
        assert {r.key for r in plan.routes if r.fits} == EXPECTED_FITS[name], name


def test_two_h100_hold_4_bit_grok_with_one_plan_and_one_margin(plans):
    """The issue's "two 80 GB GPUs hold it at 3-4 bits": the transformers route and the memory planner agree."""
    route = plans["2 x H100 80 GB"].route("transformers-nf4")
    margin = grok2_plan().margin_bytes(hw.H100_SXM.memory_bytes, 2, "nf4", CONTEXT)
    assert route.fits and margin > 0 and f"{margin / GB:,.1f} GB" in route.why[-1]
    assert grok2_plan().gpus_needed(hw.H100_SXM.memory_bytes, "nf4", CONTEXT) == 2
    assert all(p.where.startswith("GPU memory") for p in route.placement)


def test_every_command_the_planner_emits_passes_the_check_of_its_engine(plans, engine_release):
    """Every route's command, for every preset (the fastest files' too), against the files of the engine release it
    names; each route's summary says which release that is."""
    for engine in engines.ENGINES:
        engine_release(engine)
    seen = {}
    for name, plan in plans.items():
        for route in plan.routes + list(plan.fastest_files.values()):
            if route.command is not None:
                assert f"command checked against {route.commands()[0].checked_against}" in route.summary()
            for command in route.commands():
                seen.setdefault((command.engine, tuple(command.argv)), (name, route.key, command))
    assert {engine for engine, _ in seen} == {"sglang", "vllm", "llama.cpp"}
    for name, key, command in seen.values():
        check = engines.check_command(command)
        assert check.ok, (name, key, command.argv, check.problems)


def test_every_preset_has_a_table_and_a_route_that_fits(plans):
    for name, plan in plans.items():
        rows = plan.table(gpu_hour_price=2.0)
        assert rows and all(row["why"] for row in rows), name
        assert plan.best is not None, f"{name}: {plan.verdict()}"
        assert "bound" in plan.verdict()


def test_every_fitting_route_is_backed_by_arithmetic(plans):
    for name, plan in plans.items():
        for route in plan.fitting:
            assert route.why, (name, route.key)
            assert route.decode_tok_s > 0 and route.seconds_per_token == pytest.approx(
                sum(m.read_per_token / m.bandwidth for m in route.memories))
            placed = sum(p.bytes for p in route.placement)
            assert placed >= route.weights.total * 0.999, (name, route.key, placed)
            for where, items, capacity in route.stores():
                if capacity is not None:
                    assert sum(p.bytes for p in items) <= capacity * 1.0001, (name, route.key, where)
            assert route.disk_bytes > 0


def test_sglang_on_8_h100_is_bytes_over_eight_bandwidths(plans):
    route = plans["8 x H100 80 GB"].route("sglang-fp8-tp8")
    fp8 = engine_weights("fp8")
    assert route.fits and route.layout["tp"] == 8
    per_gpu = fp8.total / 8 + kv() / 8
    assert per_gpu <= sglang_mem_fraction_static(hw.H100_SXM.memory_bytes, 8) * hw.H100_SXM.memory_bytes
    assert f"{per_gpu / GB:,.1f} GB" in route.why[-1] and "--mem-fraction-static 0.813" in route.why[-1]
    assert f"{engine_weights('bf16').total / 8 / GB:,.1f} GB" in route.why[0]  # the bf16 slice while loading
    memory = (fp8.active + kv()) / (8 * hw.H100_SXM.memory_bandwidth)
    # ring all-reduces (2 per layer + the embedding's) of 8,192 bf16 values, and each GPU's 1/8 of the logits gathered
    link = ((2 * 64 + 1) * 8192 * 2 * 2 * 7 / 8 + 131072 // 8 * 2 * 7) / hw.H100_SXM.link_bandwidth
    assert route.seconds_per_token == pytest.approx(memory + link)
    assert link * hw.H100_SXM.link_bandwidth == pytest.approx(bytes_sent_per_gpu(grok2_config(), 8))
    assert "--tp" in route.command.argv and route.command.argv[route.command.argv.index("--tp") + 1] == "8"
    assert {p.kind for p in route.placement} == set(CLASSES) | {"kv_cache"}
    needs = " ".join(route.needs)
    assert f"sglang=={engines.SGLANG_VERSION}" in needs


def test_sglang_needs_eight_gpus_and_two_nodes_of_four_keep_the_released_files():
    four = machines.describe_machine("4 x H100", gpu="H100", gpus=4, ram_gib=512, network=hw.INFINIBAND_NDR_8)
    single = sglang_route(four, CONTEXT)
    assert not single.fits and "8" in single.why[0]
    nodes = two_node_route(four, CONTEXT, single)
    assert nodes.fits and nodes.layout == {"tp": 8, "nodes": 2} and nodes.gpus_used == 4
    assert not any("re-packed" in need for need in nodes.needs)
    for rank, command in enumerate(nodes.command):
        options = command.argv
        assert options[options.index("--model") + 1] == "/local/grok-2" and "--json-model-override-args" not in options
        assert options[options.index("--nnodes") + 1] == "2"
        assert options[options.index("--node-rank") + 1] == str(rank)
        assert "--dist-init-addr" in options
    assert nodes.cost(gpu_hour_price=3.0).per_hour == pytest.approx(8 * 3.0)


def test_two_nodes_of_two_h100_cannot_load_sglangs_bf16_weights(plans):
    """TP 4 on the released TP-8 files would load half of each expert; on the converted copy each rank must first hold
    a quarter of the bf16 weights, which no 80 GB GPU holds: no route."""
    route = plans["2 x H100 80 GB"].route("sglang-fp8-2-nodes")
    assert not route.fits and route.layout == {} and route.command is None
    quarter = engine_weights("bf16").total / 4
    assert quarter > GPU_USABLE * hw.H100_SXM.memory_bytes
    assert "bf16" in route.why[-1] and f"{quarter / GB:,.1f} GB >" in route.why[-1]
    assert any("re-packed" in need and "convert_released_checkpoint" in need and "#36438" in need and "open" in need
               for need in route.needs)


def a100_40gb_node():
    return machines.describe_machine("8 x A100 40 GB", gpu="A100-40GB", gpus=8, ram_gib=1024,
                                     ram=hw.DDR4_3200_16CH.name, network=hw.INFINIBAND_HDR_8)


def test_8_a100_40gb_cannot_load_the_official_route_as_the_model_card_says():
    """The model card asks for GPUs of more than 40 GB. The FP8 weights and the KV cache alone would fit 90% of 40 GiB;
    SGLang 0.5.23 first holds each GPU's bf16 slice, and serves within its own --mem-fraction-static (0.795 at TP 8
    for 40 GiB, from its memory_hook.py), so it refuses on both counts. vLLM 0.24 quantizes layer by layer: it fits."""
    machine = a100_40gb_node()
    route = sglang_route(machine, CONTEXT)
    memory = hw.A100_SXM_40.memory_bytes
    eighth = engine_weights("bf16").total / 8
    assert not route.fits and route.applicable and route.command is None
    assert eighth > GPU_USABLE * memory and f"{eighth / GB:,.1f} GB >" in route.why[-1]
    serving = engine_weights("fp8").total / 8 + kv() / 8
    assert serving <= GPU_USABLE * memory  # the weights-and-cache rule alone would have said "fits"
    assert sglang_mem_fraction_static(memory, 8) == 0.795 and serving > 0.795 * memory
    assert any("more than 40 GB" in need and f"{eighth / GB:,.1f} GB" in need for need in route.needs)
    assert vllm_route(machine, CONTEXT).fits
    least = machines.least_sglang_gpu(CONTEXT)
    assert GPU_USABLE * least >= eighth and GPU_USABLE * (least - 2**20) < eighth  # the loading bound decides
    official = machines.what_would_be_needed(CONTEXT)[-1]
    assert "SGLang" in official and f"8 GPUs with {format_bytes(least)} or more each" in official


def test_two_nodes_of_eight_a100_40gb_serve_the_repacked_checkpoint_at_tp_16():
    """TP 16 cannot read the released TP-8 files: the command serves the converted copy (whole experts) and tells
    SGLang to cut each rank's slice itself (load_presharded_moe off), the one re-pack recipe (engines.SGLANG_REPACK)."""
    machine = a100_40gb_node()
    route = two_node_route(machine, CONTEXT, sglang_route(machine, CONTEXT))
    assert route.fits and route.layout == {"tp": 16, "nodes": 2}
    assert "--mem-fraction-static 0.770 at TP 16" in route.why[-1]
    assert any("re-packed" in need and "convert_released_checkpoint" in need and "#36438" in need and "open" in need
               for need in route.needs)
    assert not any("save_in_released_layout" in need for need in route.needs)
    for command in route.command:
        argv = command.argv
        assert argv[argv.index("--model") + 1] == CONVERTED_PATH
        assert argv[argv.index("--tokenizer-path") + 1] == f"{CONVERTED_PATH}/tokenizer.tok.json"
        assert argv[argv.index("--json-model-override-args") + 1] == engines.SGLANG_PRESHARDED_OFF
        assert argv[argv.index("--tp") + 1] == "16"
    assert json.loads(engines.SGLANG_PRESHARDED_OFF) == {"load_presharded_moe": False}


@pytest.mark.parametrize("gpu, tp, expected", [
    # reserve in MiB = 512 + 1.5 x max(chunk, 2048) + 1024 x TP / 8 + 2 x decode graph batch + 8 x prefill graph sizes,
    # at least 10 GiB above 60 GiB; worked by hand from sglang 0.5.23's arg_groups/memory_hook.py and cuda_graph_hook.py
    ("H100", 8, round((81920 - (512 + 1.5 * 8192 + 1024 + 2 * 512 + 8 * 57)) / 81920, 3)),
    ("A100-40GB", 8, round((40960 - (512 + 1.5 * 4096 + 1024 + 2 * 160 + 8 * 49)) / 40960, 3)),
    ("A100-40GB", 2, round((40960 - (512 + 1.5 * 4096 + 256 + 2 * 32 + 8 * 49)) / 40960, 3)),
    ("T4", 1, round((16384 - (512 + 1.5 * 2048 + 128 + 2 * 8 + 8 * 41)) / 16384, 3)),
    ("H200", 8, round((144384 - (512 + 1.5 * 8192 + 1024 + 2 * 512 + 8 * 57)) / 144384, 3)),
])
def test_sglangs_static_memory_fraction_is_its_own_heuristic(gpu, tp, expected):
    assert sglang_mem_fraction_static(hw.ACCELERATORS[gpu].memory_bytes, tp) == expected
    with pytest.raises(ValueError):
        sglang_mem_fraction_static(hw.ACCELERATORS[gpu].memory_bytes, 0)


def test_the_projection_and_the_planner_read_the_same_bytes(plans):
    """One FP8 decode bound: lesson 02's projection, lesson 06's roofline and the planner's SGLang route all price a
    token as engine_weights(precision).active (router, norms and LM head kept in bf16) plus the KV cache."""
    route = plans["8 x H100 80 GB"].route("sglang-fp8-tp8")
    projection = project_decode(grok2_config(), hw.H100_SXM, gpus=8, weight_precision="fp8", context_tokens=CONTEXT)
    (gpu_memory,) = [m for m in route.memories if m.kind == "gpu"]
    assert projection.memory_bound_s == pytest.approx(gpu_memory.seconds_per_token, rel=1e-12)
    assert projection.memory_bound_s == pytest.approx(
        (engine_weights("fp8").active + kv()) / (8 * hw.H100_SXM.memory_bandwidth))
    # 1 byte for every active non-embedding parameter would be another, higher bound: not the course's
    plan = grok2_plan()
    one_byte = (plan.active_params - plan.embedding_params + plan.kv_cache_bytes(CONTEXT)) / (8 * hw.H100_SXM.memory_bandwidth)
    assert projection.memory_bound_s > one_byte


def test_the_projection_refuses_another_model_and_an_unknown_precision():
    from helpers.grok2 import Grok2Config

    small = Grok2Config(**{**grok2_config().to_dict(), "num_hidden_layers": 2})
    with pytest.raises(CourseError, match="num_hidden_layers"):
        project_decode(small)
    with pytest.raises(CourseError, match="weight_precision"):
        project_decode(grok2_config(), weight_precision="fp4")


def test_vllm_names_its_last_grok_release_and_a_converted_checkpoint(plans):
    route = plans["8 x A100 80 GB"].route("vllm-0.24")
    assert route.fits and route.engine.startswith("vLLM 0.24")
    assert any("convert_released_checkpoint" in need for need in route.needs)
    assert route.command.argv[:3] == ["vllm", "serve", "/local/grok-2-converted"]
    assert any("weight-only" in note or "W8A16" in note for note in route.notes)  # an A100 has no FP8 tensor cores


def test_transformers_offload_places_whole_layers_by_class_and_prices_pcie_and_disk(plans):
    """accelerate's order, recomputed here: the embeddings, then whole decoder layers, then the LM head, each to the
    GPU while it has room, then to RAM, then to disk; what a token reads of each class follows from where it lies."""
    machine = machines.preset("24 GB GPU + 128 GB DDR5")
    route = transformers_route(machine, "bf16", CONTEXT)
    bf16 = engine_weights("bf16")
    b, layers = bf16.bytes_by_class, bf16.shape.layers
    layer = sum(b[name] for name in PER_LAYER) / layers
    gpu_room, ram_room = GPU_USABLE * hw.RTX_4090.memory_bytes - kv(), RAM_USABLE * machine.ram_bytes
    on_gpu = int((gpu_room - b["embeddings"]) // layer)  # embeddings first, then whole layers
    in_ram = int(ram_room // layer)
    on_disk = layers - on_gpu - in_ram  # and the LM head after them
    read_layer = layer - b["experts"] / layers * 6 / 8  # a token reads 2 of 8 experts
    gpu_reads = b["embeddings"] / bf16.shape.vocab + on_gpu * read_layer + kv()
    pcie = min(machine.ram_bandwidth, hw.RTX_4090.host_link_bandwidth)
    expected = gpu_reads / hw.RTX_4090.memory_bandwidth \
        + ((in_ram + on_disk) * read_layer + b["lm_head"]) / pcie \
        + (on_disk * read_layer + b["lm_head"]) / machine.disk_bandwidth
    assert route.fits and route.seconds_per_token == pytest.approx(expected)
    assert route.seconds_per_token > 1  # seconds per token, not tokens per second
    placed = {(p.kind, p.where.split(" (")[0]) for p in route.placement}
    assert {("experts", "GPU memory"), ("experts", "system RAM"), ("experts", "NVMe"), ("lm_head", "NVMe"),
            ("embeddings", "GPU memory"), ("kv_cache", "GPU memory")} <= placed
    assert any(p.what == f"experts, layers 0-{on_gpu - 1}" for p in route.placement)
    assert not transformers_route(machine, "nf4", CONTEXT).fits  # 4-bit layers cannot go to disk


# ------------------------------------------------------------------------------------------- llama.cpp


def test_the_largest_n_that_fits_is_the_fewest_layers_in_ram():
    machine = machines.preset("24 GB GPU + 64 GB DDR5")
    weights = gguf_weights("IQ1_S")
    split = hybrid_split(machine, weights, CONTEXT)
    assert split["always_on_fits"]
    room = GPU_USABLE * hw.RTX_4090.memory_bytes
    n = split["n_cpu_moe"]
    assert split["always_on"] + sum(weights.expert_layers[n:]) <= room
    assert split["always_on"] + sum(weights.expert_layers[n - 1:]) > room  # one layer more on the GPU overflows
    route = hybrid_route(machine, weights, CONTEXT)
    options = route.command.argv
    assert options[options.index("--n-cpu-moe") + 1] == str(n)
    where = {p.what: p.where.split(" (")[0] for p in route.placement}
    assert where[f"experts, layers 0-{n - 1}"] == "system RAM" and where[f"experts, layers {n}-63"] == "GPU memory"
    for name in ("attention", "dense_mlp", "router", "lm_head"):
        assert where[machines.weights.LABELS[name]] == "GPU memory", name
    assert where["embeddings"] == "system RAM" and where["KV cache"] == "GPU memory"


def test_a_24_gb_card_cannot_hold_the_always_on_part_at_4_bits():
    machine = machines.preset("24 GB GPU + 256 GB DDR5")
    route = hybrid_route(machine, gguf_weights("IQ4_XS"), CONTEXT)
    assert route.fits and not route.layout["always_on_fits"]
    assert "even the always-on part" in " ".join(route.why)
    assert "--cpu-moe" in route.command.argv and "--n-gpu-layers" in route.command.argv
    assert route.layout["always_on"] > GPU_USABLE * hw.RTX_4090.memory_bytes


def test_the_layout_sentence_is_the_layout_the_route_places():
    """Lesson 07 prints describe_hybrid_layout rather than describing one case: each layout's sentence names the flags
    of the route's command and the layers its placement puts in RAM."""
    cases = {"24 GB GPU + 64 GB DDR5": True, "24 GB GPU + 128 GB DDR5": False}
    for name, always_on_fits in cases.items():
        route = machines.plan_routes(name).route("llama.cpp-hybrid")
        layout = route.layout
        assert route.fits and layout["always_on_fits"] == always_on_fits, name
        sentence = machines.describe_hybrid_layout(layout)
        argv = route.command.argv
        in_ram = {p.what for p in route.placement if p.where.startswith("system RAM")}
        if always_on_fits:
            n = layout["n_cpu_moe"]
            assert f"`--n-cpu-moe {n}`" in sentence and argv[argv.index("--n-cpu-moe") + 1] == str(n)
            assert f"experts, layers 0-{n - 1}" in in_ram and f"the experts of layers 0-{n - 1}" in sentence
            assert "attention, dense MLP, routers, norms, LM head and the KV cache on the GPU" in sentence
        else:
            cut, ngl = layout["ram_dense_layers"], layout["gpu_layers"]
            assert "`--cpu-moe`" in sentence and f"`-ngl {ngl}`" in sentence and "--cpu-moe" in argv
            assert argv[argv.index("--n-gpu-layers") + 1] == str(ngl)
            assert {"experts", f"attention (q, k, v, o), layers 0-{cut - 1}", f"KV cache ({cut} layers)"} <= in_ram
            assert f"layers 0-{cut - 1} wholly in RAM" in sentence and "even the always-on part" in sentence
    everything = {**hybrid_split(machines.preset("1 x H200"), gguf_weights("IQ1_S"), CONTEXT), "n_cpu_moe": 0}
    assert "no flag" in machines.describe_hybrid_layout(everything)


def test_the_hybrid_table_says_the_ram_to_have_in_both_units():
    """A learner holds the table against the RAM they bought (sold in GiB): 'RAM needed' is what the route's fit
    needs (the bytes kept there, counted as the route counts them, over RAM_USABLE), in GB and GiB."""
    machine = machines.preset("24 GB GPU + 128 GB DDR5")
    rows = machines.hybrid_table(machine)
    for row in rows:
        weights = gguf_weights(row["quant"])
        split = hybrid_split(machine, weights, CONTEXT)
        needed = (weights.sized_for_fit(split["ram_bytes"] - split["ram_kv"]) + split["ram_kv"]) / RAM_USABLE
        assert row["RAM needed"] == f"{needed / GB:,.1f} GB ({needed / GiB:,.1f} GiB)", row
        assert row["in RAM"] == f"{split['ram_bytes'] / GB:,.1f} GB ({split['ram_bytes'] / GiB:,.1f} GiB)"
        assert "GiB" in row["always-on part"]
        gpu_fits = split["gpu_fits"]
        assert (row["fits"] == "yes") == (gpu_fits and needed <= machine.ram_bytes), row


def test_one_gguf_type_on_one_route_is_the_planners_verdict():
    """Lesson 03's GGUF table asks the planner (llama_cpp_route) rather than a rule of its own, so it cannot disagree
    with lesson 07: a Q4_K_M file does not fit the 192 GB Mac there either."""
    from helpers.machines.llama_routes import metal_route

    mac = machines.preset("Mac Studio M2 Ultra 192 GB")
    route = machines.llama_cpp_route(mac, "metal", "Q4_K_M", CONTEXT)
    assert route.key == metal_route(mac, gguf_weights("Q4_K_M"), CONTEXT).key and not route.fits
    assert machines.llama_cpp_route(mac, "metal", "Q3_K_M").fits
    assert not machines.llama_cpp_route(machines.preset("24 GB GPU + 128 GB DDR5"), "gpu", "Q2_K").fits
    for kwargs, match in (({"family": "tpu"}, "family must be one of"), ({"quant": "Q4_K_Z"}, "Unknown GGUF type"),
                          ({"context": 0}, "context must be")):
        arguments = {"family": "metal", "quant": "Q4_K_M", "context": CONTEXT, **kwargs}
        with pytest.raises(CourseError, match=match):
            machines.llama_cpp_route(mac, **arguments)


def test_hybrid_decode_bound_is_gpu_reads_plus_ram_reads():
    machine = machines.describe_machine("2 x 3090", gpu="RTX 3090", gpus=2, ram_gib=192)
    weights = gguf_weights("IQ4_XS")
    route = hybrid_route(machine, weights, CONTEXT)
    n = route.layout["n_cpu_moe"]
    ram = sum(weights.expert_layers[:n]) * 2 / 8 + weights.bytes_by_class["embeddings"] / 131072
    gpu = weights.active + kv() - ram
    devices = [(GPU_USABLE * g.memory_bytes, g.memory_bandwidth) for g in machine.gpus]
    assert route.seconds_per_token == pytest.approx(gpu / sequential_bandwidth(devices) + ram / machine.ram_bandwidth)


def test_the_hybrid_command_opens_the_file_its_download_fetches():
    """--model is the file `hf download --include` brings (or the first of its parts, found by the setup line where
    the part count is not recorded): never a pattern llama.cpp would have to expand."""
    machine = machines.preset("24 GB GPU + 256 GB DDR5")
    checked = 0
    for quant in gguf.UNSLOTH_GROK2_QUANTS:
        route = hybrid_route(machine, gguf_weights(quant), CONTEXT)
        if not route.fits:
            continue
        entry, command = gguf.unsloth_file(quant), route.command
        model = command.argv[command.argv.index("--model") + 1]
        assert f'--include "{entry.include}"' in " ".join(route.needs)
        assert "*" not in model
        if entry.parts is None:
            assert model == f"${engines.GGUF_VARIABLE}" and f'--model "${engines.GGUF_VARIABLE}"' in command.shell()
            assert len(command.setup) == 1 and command.setup[0].startswith(f"{engines.GGUF_VARIABLE}=")
            listed = command.setup[0].split("$(ls ")[1].split(")")[0]  # what the setup line finds
            relative = listed.replace("*", "00003").removeprefix(f"{LOCAL_DIR}/")  # a 3-part type's first part
        else:
            relative = model.removeprefix(f"{LOCAL_DIR}/")
        assert fnmatch(relative, entry.include), (quant, relative, entry.include)
        assert relative.split("/")[-1].startswith(entry.first_part_name)
        checked += 1
    assert checked >= 4
    tq1 = gguf.unsloth_file("TQ1_0")
    assert tq1.first_part(LOCAL_DIR) == f"{LOCAL_DIR}/grok-2-UD-TQ1_0.gguf" and tq1.include == "grok-2-UD-TQ1_0.gguf"


def test_an_approximate_file_must_fit_with_its_margin():
    """A UD mix is priced as llama.cpp's mix of its base type, which unsloth's file exceeds: a fit needs
    APPROXIMATE_MARGIN to spare, and the line says it was counted so."""
    weights = gguf_weights("UD-Q2_K_XL")
    assert not weights.exact
    need = weights.total + kv()
    tight = machines.describe_machine("tight", gpus=0, ram_gib=(need + weights.total * APPROXIMATE_MARGIN / 2)
                                      / RAM_USABLE / GiB)  # room for the computed size, not for the margin
    route = cpu_route(tight, weights, CONTEXT)
    assert not route.fits and "approximate" in route.why[-1]
    roomy = machines.describe_machine("roomy", gpus=0, ram_gib=(weights.total * (1 + APPROXIMATE_MARGIN) + kv())
                                      / RAM_USABLE / GiB * 1.001)
    assert cpu_route(roomy, weights, CONTEXT).fits
    exact = gguf_weights("IQ1_S")
    assert exact.exact and exact.sized_for_fit(exact.total) == exact.total


def test_cpu_and_mac_prefill_is_omitted_without_a_matrix_rate(plans):
    cpu = plans["24 GB GPU + 128 GB DDR5"].route("llama.cpp-cpu")
    assert cpu.fits and cpu.prefill_tok_s is None and cpu.prefill_why.startswith("omitted")
    assert "prefill bound: not given" in cpu.summary() and cpu.row()["prefill bound (tok/s)"] is None
    mac = plans["Mac Studio M2 Ultra 192 GB"].route("llama.cpp-metal")
    assert mac.fits and mac.prefill_tok_s is None and "Apple publishes no matrix rate" in mac.prefill_why
    measured = replace(machines.preset("24 GB GPU + 128 GB DDR5"), cpu_flops=1e12)
    assert cpu_route(measured, cpu.weights, CONTEXT).prefill_tok_s > 0


def test_the_verdict_names_the_pick_honestly_and_the_fastest_file_per_route(plans):
    plan = plans["24 GB GPU + 256 GB DDR5"]
    listed = plan.route("llama.cpp-hybrid")
    fastest = plan.fastest_files["hybrid"]
    assert fastest.decode_tok_s > listed.decode_tok_s and fastest.weights.total < listed.weights.total
    assert fastest.key == fastest_llama_cpp(plan.machine, "hybrid").key
    verdict = plan.verdict()
    assert "Fastest bound" not in verdict and "Highest decode bound in the table" in verdict
    assert "most precise file that fits" in verdict and f"[{fastest.weights.name}]" in verdict


def test_hybrid_is_not_offered_where_everything_fits_the_gpus(plans):
    assert not plans["8 x H100 80 GB"].route("llama.cpp-hybrid").applicable
    assert all(r.weights.name.startswith("GGUF") for r in llama_cpp_options(machines.preset("1 x H200"), "gpu"))


def test_a_mac_fits_at_the_default_metal_limit_or_says_how_to_raise_it(plans):
    route = plans["Mac Studio M2 Ultra 192 GB"].route("llama.cpp-metal")
    need = route.weights.total + kv()
    assert route.fits and need <= RAM_USABLE * 192 * GiB
    if need > hw.METAL_DEFAULT_WORKING_SET * 192 * GiB:
        assert any("iogpu.wired_limit_mb" in n for n in route.needs)
    assert not plans["Mac Studio M2 Ultra 192 GB"].route("sglang").applicable


# ------------------------------------------------------------------------------------ published measurements


def test_every_published_speed_is_under_its_bound_and_any_gap_over_4x_is_explained():
    for row in machines.compare_published():
        assert row["bound holds"], row
        if not row["within 4x"]:
            ratio = float(row["measured / bound with --cpu-moe"])
            assert 1 / machines.published.TOO_FAR <= ratio <= 1, row  # the layout explains it
            assert "--cpu-moe" in row["gap"]
        assert row["source"] and row["gap"]
        assert "https://" in row["source"] or "UNLINKED" in row["source"], row["source"]
    sglang = machines.MEASUREMENTS[0]
    assert sglang.url is None and "UNLINKED" in sglang.cited  # the facts name the post, not its address


def test_sglang_measurement_ratio_is_measured_over_bound():
    row = machines.compare_published()[0]
    bound = row["bound (tok/s)"]
    assert row["measured / bound"] == f"{93 / bound:.2f}-{99 / bound:.2f}"


def test_a_measurement_faster_than_a_bound_rules_the_memory_out():
    rows = {r["system memory"]: r for r in machines.ram_check()}
    assert not rows[hw.DDR5_5600_2CH.name]["consistent with the measurement"]
    assert rows[hw.DDR5_5200_8CH.name]["consistent with the measurement"]  # the preset's assumption holds


# ------------------------------------------------------------------------------------- cost, picture, widget


def test_cost_per_million_tokens_follows_from_the_bound(plans):
    route = plans["8 x H100 80 GB"].route("sglang-fp8-tp8")
    cost = route.cost(gpu_hour_price=2.5)
    assert cost.per_hour == pytest.approx(8 * 2.5)
    assert cost.per_million_tokens == pytest.approx(20.0 / (route.decode_tok_s * 3600) * 1e6)
    assert route.cost().per_hour is None
    with pytest.raises(ValueError, match="dollars"):
        route.cost(gpu_hour_price=-1)


def test_the_picture_and_the_markdown_come_from_the_plan(plans):
    plan = plans["24 GB GPU + 128 GB DDR5"]
    figure = machines.plot_plan(plan)
    assert len(figure.axes) == 2
    text = machines.plan_markdown(plan, gpu_hour_price=0.5)
    assert plan.best.title in text and text.count("\n|") >= len(plan.table())
    assert machines.markdown_table([{"a": "x|y"}]).splitlines()[2] == "| x\\|y |"


def test_the_picker_replans_on_a_new_machine():
    picker = machines.machine_picker(machine="8 x H100 80 GB")
    assert picker.plan.machine.name == "8 x H100 80 GB"
    plan = picker.select("Mac Studio M3 Ultra 512 GB")
    assert plan.machine.name == "Mac Studio M3 Ultra 512 GB" and plan.best.engine == "llama.cpp"


def test_this_machine_is_measured(monkeypatch):
    from helpers.machines import machine as machine_module

    assert machine_module.RAM_PROBE_BYTES >= GiB  # beyond any CPU cache; the test itself copies less, to stay quick
    monkeypatch.setattr(machine_module, "RAM_PROBE_BYTES", 64 * 2**20)
    machine = machines.this_machine(measure_cpu_compute=False)
    assert machine.measured and machine.ram_bandwidth > 0 and machine.ram_bytes > 0
    assert machines.plan_routes(machine).verdict()
    assert machine_module.ram_copy_bandwidth(16 * 2**20, size_bytes=GiB) > 0  # a buffer: at most 1/8 of the free RAM


def test_the_ram_probe_is_the_rooflines_copy_with_a_cap_and_a_constant_fill(monkeypatch):
    """One copy measurement for the course: ram_copy_bandwidth is helpers.roofline.measure_copy_bandwidth on the CPU,
    each buffer at most an eighth of the free RAM (at least 1 MiB), filled with a constant."""
    import torch

    from helpers import roofline
    from helpers.machines import machine as machine_module

    made = []
    real_full = torch.full
    monkeypatch.setattr(torch, "full", lambda size, *a, **k: made.append(size) or real_full(size, *a, **k))
    assert machine_module.ram_copy_bandwidth(80 * 2**20, size_bytes=GiB) > 0
    assert made == [(10 * 2**20,)]  # 1/8 of 80 MiB, not the 1 GiB asked for; torch.full: a constant, not random
    assert roofline.measure_copy_bandwidth("cpu", 2**30, 1, free_bytes=2**20, fill="constant", warmups=0) > 0
    assert made[-1] == (2**20,)  # never below 1 MiB
    with pytest.raises(ValueError, match="fill"):
        roofline.measure_copy_bandwidth("cpu", 2**20, fill="zeros")
    with pytest.raises(ValueError, match="repeats"):
        roofline.measure_copy_bandwidth("cpu", 2**20, repeats=0)


# ------------------------------------------------------------------------------------------- bad inputs


def test_an_impossible_machine_gets_no_route_and_what_would_be_needed():
    machine = machines.describe_machine("no GPU, 16 GB", gpus=0, ram_gib=16)
    plan = machines.plan_routes(machine)
    assert plan.best is None and "no route" in plan.verdict()
    with pytest.raises(CourseError) as caught:
        plan.require()
    message = str(caught.value)
    assert "No route" in message and "What would be needed" in message and "of RAM" in message
    smallest = min((gguf_weights(q) for q in gguf_quants()), key=lambda w: w.total)
    ram = (smallest.sized_for_fit(smallest.total) + kv()) / RAM_USABLE
    assert f"{ram / GB:,.1f} GB ({ram / GiB:,.1f} GiB) of RAM" in message  # both units: RAM is sold in GiB


def test_an_unknown_gpu_lists_the_presets_and_how_to_describe_one():
    with pytest.raises(CourseError) as caught:
        machines.describe_machine(gpu="RTX 9999", ram_gib=64)
    message = str(caught.value)
    assert "RTX 9999" in message and "24 GB GPU + 128 GB DDR5" in message and "custom_gpu" in message
    with pytest.raises(CourseError, match="No preset machine"):
        machines.preset("my laptop")
    custom = machines.custom_gpu("my card", memory_gib=48, bandwidth_gb_s=864, bf16_tflops=181)
    assert custom.memory_bytes == 48 * GiB
    eight = machines.plan_routes(machines.describe_machine(gpu=custom, gpus=8, ram_gib=512))
    assert eight.route("vllm").fits  # FP8 weights and the KV cache fit 48 GiB cards
    assert not eight.route("sglang").fits and "bf16" in eight.route("sglang").why[-1]  # SGLang loads bf16 first


@pytest.mark.parametrize("kwargs, match", [
    ({"gpu": "H100", "gpus": 1000, "ram_gib": 64}, "from 0 to 64"),
    ({"gpu": "H100", "ram_gib": -5}, ">= 0"),
    ({"gpu": "H100", "ram_gib": math.inf}, ">= 0"),
    ({"gpu": "H100", "ram_gib": 1e9}, "beyond any single machine"),
    ({"apple": "M2 Ultra", "ram_gib": 512}, "at most 192"),
    ({"gpu": "H100", "ram_gib": 64, "ram": "DDR7 magic"}, "Unknown memory configuration"),
])
def test_numbers_out_of_range_are_refused_with_the_fix(kwargs, match):
    with pytest.raises(CourseError, match=match):
        machines.describe_machine(**kwargs)


def test_a_context_out_of_range_is_refused():
    with pytest.raises(CourseError, match="131,072"):
        machines.plan_routes("1 x H200", context=10**9)
    with pytest.raises(CourseError, match="takes a machine"):
        machines.plan_routes(42)
    machine = replace(machines.preset("1 x H200"), name="copy")
    assert machines.plan_routes(machine, context=131072).context == 131072
