"""Grok 2.5's tensors by class, in bytes, for each weight format an engine stores: what each class weighs, what a
decoded token reads of it, and the arithmetic a forward pass does. From the released config alone.

Classes: `helpers.model_parts.TENSOR_CLASSES` (embeddings, attention, dense_mlp, router, experts, norms, lm_head),
the keys of `helpers.memory.grok2_parameter_breakdown` and of `helpers.gguf.GgufSize.bytes_by_class` too. Parameter
counts are checked against the meta-device count of `helpers.memory.plan_memory`; bytes per class follow the engine's
format:

- bf16: 2 bytes each;
- fp8 (SGLang / vLLM `--quantization fp8`, quantized while loading): the attention, dense-MLP and expert matrices in
  1 byte, the rest (router, norms, embeddings, LM head) in bf16 - `MemoryPlan.weight_bytes("fp8")`;
- int8 / nf4 (bitsandbytes, the course's transformers path): `MemoryPlan.weight_bytes(...)`, code books included;
- GGUF quantization types: `helpers.gguf.gguf_size` (llama.cpp's block sizes and its mix rules).

A decoded token reads every weight once except the experts its router did not choose (top 2 of 8 per layer) and the
embedding table (one row).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..memory import BYTES_PER_PARAM, FOUR_BIT_BYTES_PER_MATRIX
from ..model_parts import TENSOR_CLASSES

CLASSES = tuple(TENSOR_CLASSES)
LABELS = {**TENSOR_CLASSES, "kv_cache": "KV cache"}
PER_LAYER = ("attention", "dense_mlp", "router", "experts", "norms")  # the classes every decoder layer has
ENGINE_FORMATS = ("bf16", "fp8", "int8", "nf4")
# A GGUF whose size is approximated (one of unsloth's calibrated mixes, priced as llama.cpp's mix of the same base type:
# the real file is larger by an amount the course has not recorded) must fit with this share of its computed size to
# spare, unless a published size is recorded.
APPROXIMATE_MARGIN = 0.10


@dataclass(frozen=True)
class GrokShape:
    """What the planner needs from the config: counts, and the parameters of each class."""

    layers: int
    experts: int
    top_k: int
    hidden: int
    vocab: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    kv_bytes_per_token: float  # keys + values of one token, all layers, in 16 bits
    max_context: int
    params: dict[str, int]
    total_params: int

    @property
    def expert_fraction(self) -> float:
        """Share of each layer's experts one token runs (top-k of the experts)."""
        return self.top_k / self.experts

    @property
    def active_params(self) -> float:
        """Parameters a token multiplies by (the embedding lookup is not a product)."""
        p = self.params
        return (p["attention"] + p["dense_mlp"] + p["router"] + p["lm_head"]
                + p["experts"] * self.expert_fraction)

    def flops_per_token(self, context: int = 0) -> float:
        """Multiply-adds x 2 of one token's forward pass, with the attention over `context` earlier tokens."""
        attention_scores = 2 * 2 * self.layers * self.attention_heads * self.head_dim * context
        return 2 * self.active_params + attention_scores

    def kv_bytes(self, context: int) -> float:
        return self.kv_bytes_per_token * context


@dataclass(frozen=True)
class Weights:
    """One weight format of Grok 2.5: bytes of each class."""

    name: str  # "fp8", "bf16", "nf4", "GGUF IQ4_XS"
    bytes_by_class: dict[str, float]
    shape: GrokShape
    operands: str  # the matrix path its kernels use: "bf16", "fp8" or "int8" (see Accelerator.matrix_rate)
    exact: bool = True
    note: str = ""
    file_bytes: float | None = None  # on disk, header included (GGUF); None: the bytes by class
    # class -> bytes of each layer, layer 0 first, when layers differ (GGUF mixes give some layers more bits)
    per_layer: dict[str, tuple[float, ...]] | None = None
    published_bytes: float | None = None  # the file size its publisher lists, where the course recorded it

    @property
    def total(self) -> float:
        return sum(self.bytes_by_class.values())

    @property
    def experts(self) -> float:
        return self.bytes_by_class["experts"]

    @property
    def always_on(self) -> float:
        """Everything but the experts: what every token needs, whichever experts it picks."""
        return self.total - self.experts

    def layers_of(self, name: str) -> tuple[float, ...]:
        """Bytes of class `name` (one of PER_LAYER) in each layer, layer 0 first (the final norm is not a layer's)."""
        if self.per_layer and name in self.per_layer:
            return self.per_layer[name]
        return (self.bytes_by_class[name] / self.shape.layers,) * self.shape.layers

    @property
    def expert_layers(self) -> tuple[float, ...]:
        """The experts of each layer (all 8 of them), layer 0 first."""
        return self.layers_of("experts")

    @property
    def dense_layers(self) -> tuple[float, ...]:
        """Each layer without its experts: attention, dense MLP, router, its norms."""
        parts = [self.layers_of(name) for name in PER_LAYER if name != "experts"]
        return tuple(sum(values) for values in zip(*parts))

    @property
    def fit_scale(self) -> float:
        """What the computed bytes are multiplied by before a fit is decided: 1 for an exact size; for an approximated
        one, the published size over the computed one where a size is published (never below 1), else
        1 + APPROXIMATE_MARGIN."""
        if self.exact:
            return 1.0
        if self.published_bytes:
            return max(1.0, self.published_bytes / self.stored)
        return 1.0 + APPROXIMATE_MARGIN

    def sized_for_fit(self, nbytes: float) -> float:
        """`nbytes` of these weights as a fit must count them (see fit_scale)."""
        return nbytes * self.fit_scale

    def fit_words(self) -> str:
        """How the fit lines count an approximated size ("" for an exact one)."""
        if self.exact:
            return ""
        if self.published_bytes:
            return f" (sized by the larger of the computed and the published size, x{self.fit_scale:.3f})"
        return (f" (approximate: the weights counted {APPROXIMATE_MARGIN:.0%} above their computed size, which "
                "the real file exceeds by an amount not recorded)")

    @property
    def stored(self) -> float:
        """Bytes on disk: the file (GGUF header included) or the weights."""
        return self.file_bytes or self.total

    @property
    def output(self) -> float:
        """The LM head (llama.cpp's output layer)."""
        return self.bytes_by_class["lm_head"]

    def read_per_token(self) -> dict[str, float]:
        """Bytes of each class one decoded token reads: the chosen experts only, one row of the embeddings."""
        b = dict(self.bytes_by_class)
        b["experts"] *= self.shape.expert_fraction
        b["embeddings"] /= self.shape.vocab
        return b

    @property
    def active(self) -> float:
        return sum(self.read_per_token().values())

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.total / self.shape.total_params


def grok2_config():
    """The released Grok 2.5 config.json (shipped in data/), as helpers.grok2's Grok2Config: helpers.memory's one
    cached copy."""
    from ..memory import grok2_released_config

    return grok2_released_config()


def grok2_plan():
    """The meta-device memory plan of the released config: helpers.memory's one cached plan."""
    from ..memory import grok2_released_plan

    return grok2_released_plan()


@functools.lru_cache(maxsize=1)
def grok2_shape() -> GrokShape:
    from ..memory import grok2_parameter_breakdown

    config, plan = grok2_config(), grok2_plan()
    params = {name: int(count) for name, count in grok2_parameter_breakdown(config).items()}
    if sum(params.values()) != plan.total_params:  # the arithmetic and the meta-device count must agree
        raise AssertionError(f"parameter breakdown {sum(params.values()):,} != meta count {plan.total_params:,}")
    return GrokShape(layers=config.num_hidden_layers, experts=config.num_local_experts,
                     top_k=config.num_experts_per_tok, hidden=config.hidden_size, vocab=config.vocab_size,
                     attention_heads=config.num_attention_heads, kv_heads=config.num_key_value_heads,
                     head_dim=config.head_dim,
                     kv_bytes_per_token=plan.kv_cache_bytes_per_token(2.0),
                     max_context=config.max_position_embeddings, params=params, total_params=plan.total_params)


def _matrices(shape: GrokShape) -> dict[str, int]:
    """Weight matrices per class that bitsandbytes quantizes (each carries its 4-bit code books)."""
    return {"attention": 4 * shape.layers, "dense_mlp": 3 * shape.layers,
            "experts": 3 * shape.experts * shape.layers}


@functools.lru_cache(maxsize=None)
def engine_weights(precision: str) -> Weights:
    """Grok 2.5 as SGLang/vLLM (fp8) or transformers (bf16, int8, nf4) hold it."""
    if precision not in ENGINE_FORMATS:
        raise ValueError(f"precision must be one of {ENGINE_FORMATS}, not {precision!r}")
    shape = grok2_shape()
    shrunk = ("attention", "dense_mlp", "experts")  # the 2D matrices of nn.Linear layers outside KEEP_UNQUANTIZED
    matrices = _matrices(shape)
    per_class = {}
    for name in CLASSES:
        n = shape.params[name]
        if precision == "bf16" or name not in shrunk:
            per_class[name] = n * BYTES_PER_PARAM["bf16"]
        else:
            code_books = matrices[name] * FOUR_BIT_BYTES_PER_MATRIX if precision == "nf4" else 0
            per_class[name] = n * BYTES_PER_PARAM[precision] + code_books
    weights = Weights(precision, per_class, shape, {"fp8": "fp8", "int8": "int8"}.get(precision, "bf16"))
    planned = grok2_plan().weight_bytes(precision)
    if abs(weights.total - planned) > 1e-6 * planned:  # one home for the bytes per precision: helpers.memory
        raise AssertionError(f"{precision}: {weights.total:,.0f} bytes by class != {planned:,.0f} planned")
    return weights


def gguf_quants() -> tuple[str, ...]:
    """The GGUF types the planner offers: the files unsloth/grok-2-GGUF publishes (no conversion needed)."""
    from .. import gguf

    return tuple(gguf.UNSLOTH_GROK2_QUANTS)


@functools.lru_cache(maxsize=None)
def gguf_weights(quant: str) -> Weights:
    """Grok 2.5 as a GGUF file of quantization type `quant` (any of helpers.gguf.GGUF_QUANTS): sizes from
    helpers.gguf, the tensor list and llama.cpp's block sizes, per class and per layer. A type unsloth/grok-2-GGUF
    publishes stands for unsloth's file: exact only where that file is llama.cpp's own mix (not one of its dynamic
    mixes, whatever its name: its TQ1_0 is grok-2-UD-TQ1_0.gguf)."""
    from .. import gguf

    config = grok2_config()
    size = gguf.gguf_size(config, quant)
    missing = set(CLASSES) - set(size.bytes_by_class)
    if missing:
        raise AssertionError(f"helpers.gguf.gguf_size({quant!r}) lacks the classes {sorted(missing)}")
    per_class = {name: float(size.bytes_by_class[name]) for name in CLASSES}
    shapes = gguf.expected_gguf_tensors(config)
    layers = config.num_hidden_layers
    per_layer = {name: [0.0] * layers for name in PER_LAYER}
    for name, ggml_type in size.tensor_types.items():
        if name.startswith("blk."):
            layer = int(name.split(".")[1])
            per_layer[gguf.sizes.tensor_class(name)][layer] += gguf.tensor_bytes(ggml_type, shapes[name])
    unsloth = gguf.UNSLOTH_FILES.get(quant)
    exact, note = bool(size.exact), size.note
    if unsloth is not None and unsloth.dynamic and exact:
        exact = False
        note = (f"unsloth's {quant} is its file {unsloth.stem}.gguf, one of its dynamic mixes: priced as llama.cpp's "
                f"{quant} mix; " + note)
    return Weights(f"GGUF {size.quant}", per_class, grok2_shape(), "int8", exact, note, float(size.total_bytes),
                   {name: tuple(values) for name, values in per_layer.items()},
                   float(unsloth.published_bytes) if unsloth and unsloth.published_bytes else None)


__all__ = ["CLASSES", "LABELS", "PER_LAYER", "APPROXIMATE_MARGIN", "ENGINE_FORMATS", "GrokShape", "Weights",
           "grok2_config", "grok2_plan", "grok2_shape",
           "engine_weights", "gguf_weights", "gguf_quants"]
