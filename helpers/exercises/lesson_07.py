"""The checks of lesson 07's three exercises:
Grok 2.5 on your hardware: a decode bound by hand, the hybrid layout of a machine you describe, the bound as a
function."""

from __future__ import annotations

from ..memory import GPU_USABLE_FRACTION
from ..units import GB, TB_PER_S, GiB
from .checking import Result, fail, not_attempted, number, passed, whole

STARTER_MACHINE = "8 x A100 80 GB"
PRACTITIONER_QUANT = "IQ4_XS"
PRACTITIONER_MACHINE = dict(gpu="RTX 3090", gpus=2, ram_gib=192, ram="DDR5-5600, 2 channels (desktop, 2 DIMMs)")


def _starter_route():
    from ..machines import plan_routes

    return plan_routes(STARTER_MACHINE).route("sglang-fp8-tp8")


def check_07_starter(a100_bound) -> Result:
    """SGLang's decode bound on 8 x A100 80 GB (FP8, TP 8, 8K context), by hand from bytes and bandwidth."""
    ex = "07 starter"
    if a100_bound is None:
        return not_attempted(ex, "Set `a100_bound` to (bytes a token reads) / (8 x one A100's bandwidth), in "
                                  "tokens/s: fp8.active + the KV cache of 8192 tokens, over 8 * A100_SXM_80.memory_bandwidth.")
    answer = number(ex, "a100_bound", a100_bound)
    route = _starter_route()
    expected = route.decode_tok_s
    fp8, shape = route.weights, route.weights.shape
    from ..accelerators import A100_SXM_80

    if abs(answer - expected) <= 0.01 * expected:
        return passed(ex, f"{answer:,.1f} tokens/s: {fp8.active / GB:.1f} GB of weights + "
                           f"{shape.kv_bytes(8192) / GB:.1f} GB of KV cache per token, read by 8 GPUs at "
                           f"{A100_SXM_80.memory_bandwidth / TB_PER_S:.3f} TB/s each. The planner says {expected:,.1f}.")
    if abs(answer * 8 - expected) <= 0.02 * expected:
        fail(ex, "that is one GPU reading everything: with tensor parallelism the 8 GPUs each read an eighth, at the "
                  "same time.")
    if abs(answer * fp8.total / fp8.active - expected) <= 0.05 * expected:
        fail(ex, "a token does not read every expert: only the 2 of 8 its router chose in each layer (use "
                  "fp8.active, not fp8.total).")
    if abs(answer * GiB / GB - expected) <= 0.02 * expected or abs(answer * GB / GiB - expected) <= 0.02 * expected:
        fail(ex, "GB and GiB are mixed: datasheet bandwidths are decimal (1e12 bytes per TB/s), like the byte counts.")
    fail(ex, f"{answer:,.1f} tokens/s is too {'high' if answer > expected else 'low'}: bytes per token (active "
              f"weights + the KV cache of 8192 tokens) / (8 x {A100_SXM_80.memory_bandwidth:.4g} bytes/s).")


def _practitioner_expected():
    from ..machines import describe_machine, gguf_weights
    from ..machines.llama_routes import hybrid_split

    machine = describe_machine("2 x RTX 3090 + 192 GB DDR5", **PRACTITIONER_MACHINE)
    one_gpu = describe_machine("1 x RTX 3090 + 192 GB DDR5", **{**PRACTITIONER_MACHINE, "gpus": 1})
    weights = gguf_weights(PRACTITIONER_QUANT)
    return (hybrid_split(machine, weights, 8192), hybrid_split(one_gpu, weights, 8192), weights.shape.layers)


def check_07_practitioner(n_cpu_moe) -> Result:
    """The smallest --n-cpu-moe for GGUF IQ4_XS on 2 x RTX 3090 with 192 GB of DDR5-5600."""
    ex = "07 practitioner"
    if n_cpu_moe is None:
        return not_attempted(ex, "Describe the machine with machines.describe_machine(...), then read the hybrid "
                                  f"layout's N for {PRACTITIONER_QUANT} (machines.hybrid_table or the route's flags).")
    answer = whole(ex, "n_cpu_moe", n_cpu_moe)
    split, one_gpu, layers = _practitioner_expected()
    expected = split["n_cpu_moe"]
    if answer == expected:
        return passed(ex, f"--n-cpu-moe {answer}: the experts of layers 0-{answer - 1} in RAM "
                           f"({split['ram_bytes'] / GB:.0f} GB), the always-on part "
                           f"({split['always_on'] / GB:.1f} GB) and {layers - answer} layers' experts on the two "
                           "GPUs.")
    if answer == layers and not one_gpu["always_on_fits"]:
        fail(ex, "that is the answer for one RTX 3090, where even the always-on part does not fit: the machine has "
                  "two (gpus=2).")
    if answer < expected:
        fail(ex, f"with only {answer} layers' experts in RAM the GPUs overflow: the always-on part plus "
                  f"{layers - answer} layers' experts do not fit {GPU_USABLE_FRACTION:.0%} of 2 x 24 GB.")
    fail(ex, f"{answer} works but is not the smallest: fewer layers' experts in RAM fit, and every layer moved to the "
              "GPUs makes decoding faster.")


def check_07_expert(decode_bound) -> Result:
    """`decode_bound(machine, weights, n_cpu_moe, context)` -> tokens/s of llama.cpp's hybrid layout, from the
    bytes per class: per token, bytes read from the GPUs / their bandwidth + bytes read from RAM / its bandwidth."""
    ex = "07 expert"
    if decode_bound is None:
        return not_attempted(ex, "Write `decode_bound(machine, weights, n_cpu_moe, context)` returning tokens/s.")
    if not callable(decode_bound):
        fail(ex, f"`decode_bound` should be a function, got {type(decode_bound).__name__}.")
    from ..machines import describe_machine, gguf_weights, preset
    from ..machines.llama_routes import hybrid_route

    cases = [(describe_machine("2 x RTX 3090 + 192 GB DDR5", **PRACTITIONER_MACHINE), PRACTITIONER_QUANT, None),
             (describe_machine("2 x RTX 3090 + 192 GB DDR5", **PRACTITIONER_MACHINE), PRACTITIONER_QUANT, 64),
             (preset("24 GB GPU + 64 GB DDR5"), "IQ1_S", None)]
    checked = 0
    for machine, quant, forced in cases:
        weights = gguf_weights(quant)
        route = hybrid_route(machine, weights, 8192, forced)
        if not route.fits or not route.layout.get("always_on_fits"):
            continue  # the exercise's formula is for layouts whose always-on part sits on the GPUs
        n, expected = route.layout["n_cpu_moe"], route.decode_tok_s
        try:
            got = number(ex, "decode_bound(...)", decode_bound(machine, weights, n, 8192))
        except (TypeError, AttributeError, KeyError, ValueError, ZeroDivisionError) as error:
            fail(ex, f"decode_bound(machine, weights, {n}, 8192) raised {type(error).__name__}: {error}")
        if abs(got - expected) > 0.002 * expected:
            everything = weights.experts * (1 - weights.shape.expert_fraction) / GB
            fail(ex, f"{machine.name}, {quant}, --n-cpu-moe {n}: {got:,.2f} tokens/s, the planner's bound is "
                      f"{expected:,.2f}. Check: a token reads 2 of 8 experts per layer (reading all adds "
                      f"{everything:,.0f} GB), the whole always-on part and KV cache on the GPUs, one embedding row "
                      "in RAM; the GPUs take turns (their bandwidth is machines.route.sequential_bandwidth).")
        checked += 1
    if checked < 2:
        raise AssertionError("lesson 07's expert check needs at least two hybrid layouts to compare against")
    return passed(ex, f"your bound matches the planner's on {checked} layouts: bytes per memory / bandwidth, summed.")
