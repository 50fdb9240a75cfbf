"""What tensor parallelism sends between GPUs for each decoded token, from the config: the collectives (count and
bytes), the bytes each GPU puts on its link, and a projection of Grok 2.5's decode step on N GPUs (memory roofline
plus communication). One formula for the whole course: lesson 02 checks it against the bytes the tiny model's ranks
really sent, and the machine planner (`gpu_routes`) charges it to the GPUs' link.

    comm = collectives_per_token(config, tp_size=8, bytes_per_value=2)   # 2 all-reduces per layer + 2, by the config
    bytes_sent_per_gpu(config, tp_size=8)                                # what each GPU sends per token (ring)
    projection = project_decode(grok_config, H100_SXM, gpus=8)           # a PROJECTION, not a measurement
    print("\\n".join(projection.summary()))

Datasheet figures and the public all-reduce latency come from `helpers.accelerators`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..accelerators import H100_SXM, Accelerator
from ..errors import CourseError

ACTIVATION_BYTES = 2  # activations travel between GPUs in bf16


def collectives_per_token(config, tp_size: int, bytes_per_value: int) -> dict[str, float]:
    """What one token's forward pass sends, from the config (`hidden_size`, `num_hidden_layers`, `vocab_size`).

    Per decoder layer two all-reduces of `hidden_size` values (attention output; experts + dense MLP); one more for
    the vocabulary-parallel embedding; one all-gather of the logits, each rank contributing vocab / N of them.
    """
    hidden, layers = config.hidden_size, config.num_hidden_layers
    return {
        "all_reduces": 2 * layers + 1,
        "all_gathers": 1,
        "all_reduce_bytes_per_layer": 2 * hidden * bytes_per_value,
        "all_reduce_bytes": (2 * layers + 1) * hidden * bytes_per_value,
        "all_gather_bytes_per_rank": config.vocab_size // tp_size * bytes_per_value,
    }


def bytes_sent_per_gpu(config, tp_size: int, bytes_per_value: int = ACTIVATION_BYTES) -> float:
    """Bytes each of `tp_size` GPUs sends per decoded token: a ring all-reduce sends 2(N-1)/N of its buffer, an
    all-gather sends the GPU's own slice to its N-1 peers. Nothing at N = 1."""
    comm = collectives_per_token(config, tp_size, bytes_per_value)
    ring = 2 * (tp_size - 1) / tp_size
    return comm["all_reduce_bytes"] * ring + comm["all_gather_bytes_per_rank"] * (tp_size - 1)


@dataclass(frozen=True)
class DecodeProjection:
    """A PROJECTION for one decoded token (batch 1) on `gpus` GPUs of one kind: datasheet peaks and a public latency,
    not a measurement. Times in seconds per token."""

    accelerator: str
    gpus: int
    communication: dict  # collectives_per_token at bf16 activations
    latency_bound_s: float  # every collective costs one small all-reduce's measured latency
    bandwidth_bound_s: float  # ring all-reduce / all-gather bytes each GPU sends, over its link
    memory_bound_s: float  # each GPU reads its 1/N of the active weights and of the KV cache, at peak bandwidth
    weight_precision: str
    context_tokens: int
    latency_source: str
    latency_s: float  # one small all-reduce (helpers.accelerators), the figure the latency bound multiplies
    link_bandwidth: float  # bytes/s per GPU, one direction (helpers.accelerators)

    @property
    def communication_s(self) -> float:
        """The communication's time per token: the larger of its two bounds (a collective can beat neither)."""
        return max(self.latency_bound_s, self.bandwidth_bound_s)

    @property
    def with_communication_s(self) -> float:
        """Memory bound plus the communication: a layer cannot start before the previous one's sum arrives."""
        return self.memory_bound_s + self.communication_s

    @property
    def slowdown(self) -> float:
        """How much longer a token takes with the communication than the memory bound alone (0.2 = 20% slower)."""
        return self.with_communication_s / self.memory_bound_s - 1

    def tokens_per_s(self, with_communication: bool = True) -> float:
        return 1.0 / (self.with_communication_s if with_communication else self.memory_bound_s)

    def summary(self) -> list[str]:
        """The projection in a few lines, each labelled as what it is."""
        from ..units import format_bytes

        c, us = self.communication, 1e6
        return [
            f"PROJECTION for one decoded token (batch 1) on {self.gpus} x {self.accelerator}, not a measurement:",
            f"  sent per token: {c['all_reduces']} all-reduces of {format_bytes(c['all_reduce_bytes_per_layer'] / 2)} "
            f"(2 per layer + the embedding) = {format_bytes(c['all_reduce_bytes'])}, and one all-gather of the logits "
            f"({format_bytes(c['all_gather_bytes_per_rank'])} from each GPU)",
            f"  latency-bound:   {self.latency_bound_s * us:7.0f} us per token "
            f"({c['all_reduces'] + c['all_gathers']} collectives x {self.latency_s * us:.1f} us, one small all-reduce "
            f"as measured in public)",
            f"  bandwidth-bound: {self.bandwidth_bound_s * us:7.1f} us per token (what each GPU sends in ring "
            f"all-reduces and the all-gather, over its {self.link_bandwidth / 1e9:.0f} GB/s link)",
            f"  memory roofline ({self.weight_precision} weights, {self.context_tokens:,}-token context): "
            f"{self.memory_bound_s * 1e3:.2f} ms per token = at most {self.tokens_per_s(False):.0f} tokens/s",
            f"  with the communication on the critical path (the larger bound): {self.with_communication_s * 1e3:.2f} "
            f"ms = at most {self.tokens_per_s():.0f} tokens/s ({self.slowdown:.0%} slower)",
        ]


# The config fields the projection's arithmetic depends on: a config that differs in any of them is not Grok 2.5.
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads", "num_key_value_heads",
                "head_dim", "intermediate_size", "moe_intermediate_size", "num_local_experts", "num_experts_per_tok")


def project_decode(config, accelerator: Accelerator = H100_SXM, gpus: int = 8, weight_precision: str = "fp8",
                   context_tokens: int = 8192) -> DecodeProjection:
    """Project Grok 2.5's decode step at tensor parallelism `gpus` (batch 1): memory roofline and communication.

    The bytes a token reads are the machine planner's (`weights.engine_weights(weight_precision).active`: in fp8 the
    router, norms and LM head stay in bf16, as SGLang keeps them) plus the KV cache of the cached released plan, so
    this roofline and the planner's SGLang route give one bound. `config` must be Grok 2.5's (the released config)."""
    from ..memory import grok2_released_config, grok2_released_plan
    from .weights import ENGINE_FORMATS, engine_weights

    released = grok2_released_config()
    different = [name for name in SHAPE_FIELDS if getattr(config, name, None) != getattr(released, name)]
    if different:
        raise CourseError(f"project_decode projects Grok 2.5 only; this config differs from the released one in "
                          f"{', '.join(different)}.", "Pass helpers.memory.grok2_released_config() (or the released "
                          "config.json loaded with Grok2Config).")
    if weight_precision not in ENGINE_FORMATS:
        raise CourseError(f"weight_precision must be one of {', '.join(ENGINE_FORMATS)}, not {weight_precision!r}.",
                          "Use \"fp8\" (SGLang's) or \"bf16\" (the released weights).")
    if accelerator.all_reduce_latency is None:
        raise CourseError(f"helpers.accelerators has no public all-reduce latency for {accelerator.name}.",
                          "project on H100_SXM, or add the figure with its source to helpers/accelerators.py.")
    comm = collectives_per_token(config, gpus, ACTIVATION_BYTES)
    calls = comm["all_reduces"] + comm["all_gathers"]
    read = engine_weights(weight_precision).active  # of the embedding table one row per token is read
    per_gpu = (read + grok2_released_plan().kv_cache_bytes(context_tokens)) / gpus
    return DecodeProjection(accelerator.name, gpus, comm, calls * accelerator.all_reduce_latency,
                            bytes_sent_per_gpu(config, gpus) / accelerator.link_bandwidth,
                            per_gpu / accelerator.memory_bandwidth, weight_precision, context_tokens,
                            accelerator.all_reduce_source, accelerator.all_reduce_latency, accelerator.link_bandwidth)


__all__ = ["ACTIVATION_BYTES", "SHAPE_FIELDS", "collectives_per_token", "bytes_sent_per_gpu", "DecodeProjection", "project_decode"]
