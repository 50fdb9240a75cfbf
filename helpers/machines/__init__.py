"""Grok 2.5 on the machine you have: every route that could run it, whether it fits and why, where each tensor class
lives, the bytes a decoded token reads from each memory, the speed bound that follows, disk and cost.

    from helpers import machines
    plan = machines.plan_routes("24 GB GPU + 128 GB DDR5")   # a preset (machines.PRESETS), "this machine", a Machine
    print(plan.verdict())
    machines.show_plan("8 x H100 80 GB", gpu_hour_price=2.5)  # the table and the picture, in a notebook
    machines.hybrid_table("24 GB GPU + 64 GB DDR5")          # llama.cpp's experts-in-RAM layout per GGUF type
    machines.llama_cpp_route(machine, "metal", "Q4_K_M")     # one llama.cpp route for one GGUF type: fits, and why
    machines.compare_published()                              # published speeds beside the bounds

Modules: `machine` (what a machine is: presets, custom, measured), `weights` (Grok 2.5's bytes per tensor class and
format), `route` (one route's arithmetic), `communication` (what tensor parallelism sends per token, and the decode
projection of lesson 02), `gpu_routes` (SGLang, vLLM 0.24.x, two nodes, transformers), `llama_routes` (llama.cpp:
GPUs, hybrid, CPU, Metal), `planner` (all routes of a machine), `published` (measurements beside bounds), `report`
(table and picture), `picker` (the widget). Datasheet figures come from `helpers.accelerators`.
"""

from .machine import PRESETS, PUBLISHED_RIG, Machine, custom_gpu, describe_machine, find_accelerator, preset, this_machine
from .llama_routes import describe_hybrid_layout, llama_cpp_route
from .planner import DEFAULT_CONTEXT, RoutePlan, hybrid_table, least_sglang_gpu, plan_routes, what_would_be_needed
from .picker import MachinePicker, machine_picker
from .published import MEASUREMENTS, compare_published, ram_check
from .report import markdown_table, plan_markdown, plot_plan, show_plan
from .route import Route
from .weights import engine_weights, gguf_weights, grok2_shape

__all__ = ["PRESETS", "PUBLISHED_RIG", "Machine", "custom_gpu", "describe_machine", "find_accelerator", "preset",
           "this_machine", "DEFAULT_CONTEXT", "RoutePlan", "hybrid_table", "plan_routes", "what_would_be_needed",
           "least_sglang_gpu", "describe_hybrid_layout", "llama_cpp_route",
           "MachinePicker", "machine_picker", "MEASUREMENTS", "compare_published", "ram_check", "markdown_table", "plan_markdown", "plot_plan", "show_plan",
           "Route", "engine_weights", "gguf_weights", "grok2_shape"]
