"""Memory plans for LoRA and QLoRA training, from a model's config alone: exact adapter and optimizer sizes, an
activation estimate, and which sets of GPUs hold it (FSDP or a device map).

    plan = plan_lora(AutoConfig.from_pretrained(GROK2_RELEASED_CONFIG), LoraSettings(rank=16, alpha=32))
    plan.smallest_sets("fsdp")      # ['4 x A100 / H100 80GB', '2 x H200 141GB', ...]

GPU memory figures come from `helpers.accelerators` (the datasheets); nothing here needs a GPU or the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..accelerators import ACCELERATORS
from ..memory import GPU_USABLE_FRACTION
from ..units import GB, GiB
from .adapters import LoraSettings, find_lora_targets

# The GPUs a LoRA run on Grok 2 is planned for, grouped by memory size: "A100 / H100 80GB" is one row because the
# two hold the same bytes. (AMD MI300X, 192 GB, is left out: bitsandbytes' 4-bit kernels on ROCm are not verified by
# the course.)
PLANNED_GPUS = ("A100-40GB", "A100-80GB", "H100", "H200")


def _gpu_kinds(names: Sequence[str]) -> dict[str, float]:
    """{"A100 / H100 80GB": bytes, ...}: the named accelerators, those with equal memory sharing one label."""
    by_memory: dict[float, list[str]] = {}
    for name in names:
        accelerator = ACCELERATORS[name]
        by_memory.setdefault(accelerator.memory_bytes, []).append(accelerator.name.split()[0])
    return {f"{' / '.join(dict.fromkeys(models))} {memory / GiB:.0f}GB": memory  # the name it is sold by (GiB)
            for memory, models in sorted(by_memory.items())}


GPU_KINDS: dict[str, float] = _gpu_kinds(PLANNED_GPUS)  # memory per GPU in bytes (its "GB" as sold are GiB)


@dataclass(frozen=True)
class LoraPlan:
    """Memory for LoRA / QLoRA training of one model, from its config (exact counts; activations estimated)."""

    model_name: str
    precision: str  # of the frozen base weights
    num_layers: int
    lora_params: int
    lora_params_by_part: dict
    base_weight_bytes: float
    adapter_bytes: float  # LoRA weights, fp32
    gradient_bytes: float  # their gradients, fp32
    optimizer_bytes: float  # AdamW's two moments, fp32
    activation_bytes: float  # estimate for batch_size x seq_len
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool

    @property
    def training_state_bytes(self) -> float:
        return self.adapter_bytes + self.gradient_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> float:
        return self.base_weight_bytes + self.training_state_bytes + self.activation_bytes

    def per_gpu_bytes(self, gpus: int, strategy: str = "fsdp") -> float:
        """Peak bytes on each GPU. "fsdp": weights, adapters and optimizer sharded over the GPUs (FSDP / ZeRO-3),
        each GPU holding its own micro-batch's activations plus two gathered layers. "device_map": one process,
        layers spread over the GPUs (they take turns); activations counted on every GPU (conservative)."""
        sharded = (self.base_weight_bytes + self.training_state_bytes) / gpus
        if strategy == "fsdp":
            gathered = 2 * self.base_weight_bytes / self.num_layers if gpus > 1 else 0.0
            return sharded + self.activation_bytes + gathered
        if strategy == "device_map":
            return sharded + self.activation_bytes
        raise ValueError(f"strategy must be 'fsdp' or 'device_map', not {strategy!r}")

    def gpu_options(self, kinds: dict[str, float] = GPU_KINDS, counts: Sequence[int] = (1, 2, 4, 8),
                    strategy: str = "fsdp") -> list[dict]:
        rows = []
        for kind, memory in kinds.items():
            for n in counts:
                need = self.per_gpu_bytes(n, strategy)
                rows.append({"gpus": f"{n} x {kind}", "count": n, "per_gpu_GB": round(need / GB, 1),
                             "fits": need <= GPU_USABLE_FRACTION * memory})
        return rows

    def smallest_sets(self, strategy: str = "fsdp") -> list[str]:
        """For each GPU kind, the fewest GPUs (1, 2, 4 or 8) that fit - the sets worth renting."""
        best = {}
        for row in self.gpu_options(strategy=strategy):
            kind = row["gpus"].split(" x ", 1)[1]
            if row["fits"] and kind not in best:
                best[kind] = row["gpus"]
        return list(best.values())


def _activation_bytes(config, batch: int, seq: int, checkpointing: bool, bytes_per_value: int = 2) -> float:
    """A rough estimate of activation memory for one training step (+-50%: kernels and allocators differ).

    Per layer: about 12 hidden-size vectors per token (norms, residuals, q/k/v/o), 4 values per dense-MLP and per
    chosen-expert intermediate unit (gate, up, activation, product), and the fp32 attention scores, probabilities
    and their soft-capped copy (3 x heads x seq^2; Grok 2 cannot use fused attention). Plus the fp32 logits and
    their gradient. With gradient checkpointing only each layer's input is kept, one layer is recomputed at a time.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    h, layers, heads = text.hidden_size, text.num_hidden_layers, text.num_attention_heads
    dense = getattr(text, "intermediate_size", 0) if getattr(text, "residual_moe", True) else 0
    experts = (getattr(text, "moe_intermediate_size", 0) or 0) * (getattr(text, "num_experts_per_tok", 0) or 0)
    per_layer = bytes_per_value * batch * seq * (12 * h + 4 * dense + 4 * experts) + 3 * 4 * batch * heads * seq * seq
    logits = 2 * 4 * batch * seq * text.vocab_size
    if checkpointing:
        return layers * bytes_per_value * batch * seq * h + per_layer + logits
    return layers * per_layer + logits


def plan_lora(config, settings: LoraSettings = LoraSettings(), *, precision: str = "nf4", batch_size: int = 1,
              seq_len: int = 1024, gradient_checkpointing: bool = True, name: str | None = None) -> LoraPlan:
    """Memory plan for LoRA training from a config alone: builds the model on the meta device (no memory), counts
    the adapter parameters exactly (rank x (in + out) per adapted matrix), adds AdamW state and estimates
    activations. precision: "nf4" for QLoRA, "bf16"/"fp16" for LoRA on a 16-bit base, "fp32" on CPU."""
    from ..memory import _build_on_meta, plan_memory

    plan = plan_memory(config, name=name)
    meta = _build_on_meta(config)
    by_part = {part: 0 for part in settings.parts}
    for part, names in find_lora_targets(meta, settings).items():
        for module_name in names:
            module = meta.get_submodule(module_name)
            by_part[part] += settings.rank * (module.in_features + module.out_features)
    lora = sum(by_part.values())
    return LoraPlan(
        model_name=plan.model_name, precision=precision, num_layers=plan.num_layers, lora_params=lora,
        lora_params_by_part=by_part, base_weight_bytes=plan.weight_bytes(precision), adapter_bytes=4.0 * lora,
        gradient_bytes=4.0 * lora, optimizer_bytes=8.0 * lora,
        activation_bytes=_activation_bytes(config, batch_size, seq_len, gradient_checkpointing,
                                           4 if precision == "fp32" else 2),
        batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=gradient_checkpointing)


__all__ = ["PLANNED_GPUS", "GPU_KINDS", "LoraPlan", "plan_lora"]
