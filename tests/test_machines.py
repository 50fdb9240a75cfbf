"""The machine planner (helpers.machines): every preset's table, the arithmetic behind each "fits", the decode bound
as bytes / bandwidth summed over memories, llama.cpp's hybrid layout, the published measurements beside their bounds,
and the bad inputs (an impossible machine, an unknown GPU, numbers out of range).

Expected values are recomputed here from the datasheet entries and the sizes by class, independently of the route
code, so a wrong formula in a route fails a test.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from helpers import accelerators as hw
from helpers import machines
from helpers.errors import CourseError
from helpers.machines.gpu_routes import sglang_route, transformers_route, two_node_route
from helpers.machines.llama_routes import hybrid_route, hybrid_split, llama_cpp_options
from helpers.machines.route import GPU_USABLE, RAM_USABLE, sequential_bandwidth
from helpers.machines.weights import CLASSES, engine_weights, gguf_quants, gguf_weights, grok2_plan

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


def test_memory_and_pcie_bandwidths_are_the_products_they_claim():
    assert hw.DDR5_5600_2CH.bandwidth == 2 * 8 * 5600e6
    assert hw.DDR4_3200_16CH.bandwidth == 16 * 8 * 3200e6
    assert hw.PCIE["PCIe 4.0 x16"] == pytest.approx(2 * hw.PCIE["PCIe 3.0 x16"])
    assert hw.RTX_3090.matrix_rate("int8") == hw.RTX_3090.int8_ops > hw.RTX_3090.bf16_flops
    assert hw.A100_SXM_80.matrix_rate("fp8") == hw.A100_SXM_80.bf16_flops  # weight-only FP8: 16-bit arithmetic
    assert hw.H100_SXM.matrix_rate("fp8") == hw.H100_SXM.fp8_flops > hw.H100_SXM.bf16_flops


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


# -------------------------------------------------------------------------------------------- the presets


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
    assert per_gpu <= GPU_USABLE * hw.H100_SXM.memory_bytes
    assert f"{per_gpu / 1e9:,.1f} GB" in route.why[0]
    memory = (fp8.active + kv()) / (8 * hw.H100_SXM.memory_bandwidth)
    link = 2 * 64 * 8192 * 2 * 2 * 7 / 8 / hw.H100_SXM.link_bandwidth
    assert route.seconds_per_token == pytest.approx(memory + link)
    assert "--tp" in route.command.argv and route.command.argv[route.command.argv.index("--tp") + 1] == "8"


def test_sglang_needs_eight_gpus_and_two_nodes_of_four_keep_the_released_files():
    four = machines.describe_machine("4 x H100", gpu="H100", gpus=4, ram_gb=512, network=hw.INFINIBAND_NDR_8)
    single = sglang_route(four, CONTEXT)
    assert not single.fits and "8" in single.why[0]
    nodes = two_node_route(four, CONTEXT, single)
    assert nodes.fits and nodes.layout == {"tp": 8, "nodes": 2} and nodes.gpus_used == 4
    assert not any("re-packed" in need for need in nodes.needs)
    for rank, command in enumerate(nodes.command):
        options = command.argv
        assert options[options.index("--nnodes") + 1] == "2"
        assert options[options.index("--node-rank") + 1] == str(rank)
        assert "--dist-init-addr" in options
    assert nodes.cost(gpu_hour_price=3.0).per_hour == pytest.approx(8 * 3.0)


def test_two_nodes_of_two_need_a_repacked_checkpoint(plans):
    route = plans["2 x H100 80 GB"].route("sglang-fp8-2-nodes")
    assert route.fits and route.layout["tp"] == 4
    assert any("re-packed" in need and "tp_size=4" in need for need in route.needs)


def test_vllm_names_its_last_grok_release_and_a_converted_checkpoint(plans):
    route = plans["8 x A100 80 GB"].route("vllm-0.24")
    assert route.fits and route.engine.startswith("vLLM 0.24")
    assert any("convert_released_checkpoint" in need for need in route.needs)
    assert route.command.argv[:3] == ["vllm", "serve", "/local/grok-2-converted"]
    assert any("weight-only" in note or "W8A16" in note for note in route.notes)  # an A100 has no FP8 tensor cores


def test_transformers_offload_costs_seconds_per_token_from_pcie_and_disk(plans):
    machine = machines.preset("24 GB GPU + 128 GB DDR5")
    route = transformers_route(machine, "bf16", CONTEXT)
    bf16 = engine_weights("bf16")
    gpu = max(0.0, GPU_USABLE * hw.RTX_4090.memory_bytes - kv())
    ram = RAM_USABLE * machine.ram_bytes
    disk = bf16.total - gpu - ram
    active = bf16.active
    expected = (active * gpu / bf16.total + kv()) / hw.RTX_4090.memory_bandwidth \
        + active * (ram + disk) / bf16.total / min(machine.ram_bandwidth, hw.RTX_4090.host_link_bandwidth) \
        + active * disk / bf16.total / machine.disk_bandwidth
    assert route.fits and route.seconds_per_token == pytest.approx(expected)
    assert route.seconds_per_token > 1  # seconds per token, not tokens per second
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


def test_a_24_gb_card_cannot_hold_the_always_on_part_at_4_bits():
    machine = machines.preset("24 GB GPU + 256 GB DDR5")
    route = hybrid_route(machine, gguf_weights("IQ4_XS"), CONTEXT)
    assert route.fits and not route.layout["always_on_fits"]
    assert "even the always-on part" in " ".join(route.why)
    assert "--cpu-moe" in route.command.argv and "--n-gpu-layers" in route.command.argv
    assert route.layout["always_on"] > GPU_USABLE * hw.RTX_4090.memory_bytes


def test_hybrid_decode_bound_is_gpu_reads_plus_ram_reads():
    machine = machines.describe_machine("2 x 3090", gpu="RTX 3090", gpus=2, ram_gb=192)
    weights = gguf_weights("IQ4_XS")
    route = hybrid_route(machine, weights, CONTEXT)
    n = route.layout["n_cpu_moe"]
    ram = sum(weights.expert_layers[:n]) * 2 / 8 + weights.bytes_by_class["embeddings"] / 131072
    gpu = weights.active + kv() - ram
    devices = [(GPU_USABLE * g.memory_bytes, g.memory_bandwidth) for g in machine.gpus]
    assert route.seconds_per_token == pytest.approx(gpu / sequential_bandwidth(devices) + ram / machine.ram_bandwidth)


def test_hybrid_is_not_offered_where_everything_fits_the_gpus(plans):
    assert not plans["8 x H100 80 GB"].route("llama.cpp-hybrid").applicable
    assert all(r.weights.name.startswith("GGUF") for r in llama_cpp_options(machines.preset("1 x H200"), "gpu"))


def test_a_mac_fits_at_the_default_metal_limit_or_says_how_to_raise_it(plans):
    route = plans["Mac Studio M2 Ultra 192 GB"].route("llama.cpp-metal")
    need = route.weights.total + kv()
    assert route.fits and need <= RAM_USABLE * 192e9
    if need > hw.METAL_DEFAULT_WORKING_SET * 192e9:
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


def test_this_machine_is_measured():
    machine = machines.this_machine(measure_cpu_compute=False)
    assert machine.measured and machine.ram_bandwidth > 0 and machine.ram_bytes > 0
    assert machines.plan_routes(machine).verdict()


# ------------------------------------------------------------------------------------------- bad inputs


def test_an_impossible_machine_gets_no_route_and_what_would_be_needed():
    machine = machines.describe_machine("no GPU, 16 GB", gpus=0, ram_gb=16)
    plan = machines.plan_routes(machine)
    assert plan.best is None and "no route" in plan.verdict()
    with pytest.raises(CourseError) as caught:
        plan.require()
    message = str(caught.value)
    assert "No route" in message and "What would be needed" in message and "of RAM" in message
    smallest = min(gguf_weights(q).total for q in gguf_quants())
    assert f"{(smallest + kv()) / RAM_USABLE / 1e9:,.1f} GB of RAM" in message


def test_an_unknown_gpu_lists_the_presets_and_how_to_describe_one():
    with pytest.raises(CourseError) as caught:
        machines.describe_machine(gpu="RTX 9999", ram_gb=64)
    message = str(caught.value)
    assert "RTX 9999" in message and "24 GB GPU + 128 GB DDR5" in message and "custom_gpu" in message
    with pytest.raises(CourseError, match="No preset machine"):
        machines.preset("my laptop")
    custom = machines.custom_gpu("my card", memory_gb=48, bandwidth_gb_s=864, bf16_tflops=181)
    assert machines.plan_routes(machines.describe_machine(gpu=custom, gpus=8, ram_gb=512)).route("sglang").fits


@pytest.mark.parametrize("kwargs, match", [
    ({"gpu": "H100", "gpus": 1000, "ram_gb": 64}, "from 0 to 64"),
    ({"gpu": "H100", "ram_gb": -5}, ">= 0"),
    ({"gpu": "H100", "ram_gb": math.inf}, ">= 0"),
    ({"gpu": "H100", "ram_gb": 1e9}, "beyond any single machine"),
    ({"apple": "M2 Ultra", "ram_gb": 512}, "at most 192"),
    ({"gpu": "H100", "ram_gb": 64, "ram": "DDR7 magic"}, "Unknown memory configuration"),
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
