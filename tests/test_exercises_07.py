"""Lesson 07's exercise checks: the right answers pass, typical wrong ones are rejected with a message that says what
is wrong. The right answers are the solution notebook's, in short."""

from __future__ import annotations


from helpers import exercises as E
from helpers import machines
from helpers.accelerators import A100_SXM_80
from helpers.exercises import lesson_07
from helpers.machines.route import GPU_USABLE, sequential_bandwidth


def starter_answer():
    fp8 = machines.engine_weights("fp8")
    return 8 * A100_SXM_80.memory_bandwidth / (fp8.active + fp8.shape.kv_bytes(8192))


def test_07_starter(rejects):
    right = starter_answer()
    assert E.check_07_starter(right).passed
    rejects(E.check_07_starter, right / 8, match="one GPU")
    fp8 = machines.engine_weights("fp8")
    rejects(E.check_07_starter, right * fp8.active / fp8.total, match="2 of 8")
    rejects(E.check_07_starter, right * 1e9 / 2**30, match="GiB")
    rejects(E.check_07_starter, right * 3, match="too high")
    rejects(E.check_07_starter, "139", match="should be a number")


def test_07_practitioner(rejects):
    split, one_gpu, layers = lesson_07._practitioner_expected()
    n = split["n_cpu_moe"]
    assert 0 < n < layers and not one_gpu["always_on_fits"]  # the exercise needs both GPUs to make sense
    assert E.check_07_practitioner(n).passed
    rejects(E.check_07_practitioner, layers, match="two")
    rejects(E.check_07_practitioner, n - 1, match="overflow")
    rejects(E.check_07_practitioner, n + 1, match="not the smallest")
    rejects(E.check_07_practitioner, 2.5, match="whole number")


def right_bound(machine, weights, n_cpu_moe, context):
    shape = weights.shape
    ram = sum(weights.expert_layers[:n_cpu_moe]) * shape.expert_fraction + weights.read_per_token()["embeddings"]
    gpu = weights.active + shape.kv_bytes(context) - ram
    devices = [(GPU_USABLE * g.memory_bytes, g.memory_bandwidth) for g in machine.gpus]
    return 1 / (gpu / sequential_bandwidth(devices) + ram / machine.ram_bandwidth)


def test_07_expert(rejects):
    assert E.check_07_expert(right_bound).passed

    def all_experts(machine, weights, n, context):
        shape = weights.shape
        ram = sum(weights.expert_layers[:n]) + weights.read_per_token()["embeddings"]
        gpu = weights.always_on + sum(weights.expert_layers[n:]) + shape.kv_bytes(context)
        return 1 / (gpu / machine.gpus[0].memory_bandwidth + ram / machine.ram_bandwidth)

    def no_kv(machine, weights, n, context):
        return right_bound(machine, weights, n, 1)

    rejects(E.check_07_expert, all_experts, match="2 of 8 experts")
    rejects(E.check_07_expert, no_kv, match="planner's bound")
    rejects(E.check_07_expert, lambda machine, weights, n, context: None, match="should be a number")
    rejects(E.check_07_expert, lambda machine, weights, n: 1.0, match="TypeError")
    rejects(E.check_07_expert, 42, match="should be a function")
