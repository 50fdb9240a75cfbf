"""Grok 2 (xAI's Grok 2.5) as a transformers model: config -> modules -> model, in one file.

transformers ships no Grok 2. This file writes it from the reference that xAI's own model card points to, SGLang's
`python/sglang/srt/models/grok.py` (and its Triton attention kernels), cross-checked against vLLM's `grok1.py` and
llama.cpp's `src/models/grok.cpp`. Each formula names where it comes from. Where the engines disagree (facts 4.6) this
file follows SGLang and says so.

One layer, in the order SGLang runs it ("sandwich" norms: each sub-block is normalised on the way in AND out):

    h = h + post_attn_norm(attention(pre_attn_norm(h)))
    x = pre_moe_norm(h)
    h = h + post_moe_norm((moe(x) + dense_mlp(x)) / sqrt(2))

Parameter names equal the released checkpoint's (`model.layers.N.block_sparse_moe.experts.E.w1.weight`, ...), so the
real weights load without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_grok2 import Grok2Config

# transformers 5.24 renamed the outputs' `past_key_values` field to `cache` (the old name still reads, via a
# property). Build outputs with whichever field this version has, so the model works on both sides of the rename.
_CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """`cap * tanh(x / cap)`: smooth clipping to (-cap, cap). Grok uses it on attention, router and output logits."""
    if cap is None or cap <= 0:
        return x
    return cap * torch.tanh(x / cap)


class Grok2RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (SGLang `RMSNorm`): bf16 squares of 8192 values lose too much precision."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


# --------------------------------------------------------------------------------------------------------- RoPE


def yarn_inverse_frequencies(config: Grok2Config, dim: int) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al. 2023): keep high frequencies, interpolate low ones by `scaling_factor`, blend in between.

    Used only when a config says `rope_type: "yarn"` (proposed in HF discussion #7 on xai-org/grok-2, and what
    llama.cpp's converter assumes). Returns inverse frequencies and the attention magnitude scale (mscale).
    """
    base, factor = config.rope_theta, config.scaling_factor
    original_context = config.original_max_position_embeddings
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    extrapolated = 1.0 / base**exponents
    interpolated = extrapolated / factor

    def dimension_of(rotations: float) -> float:
        # The rotary dimension whose wavelength fits `rotations` full turns into the original context.
        return dim * math.log(original_context / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(dimension_of(config.beta_fast)), 0)
    high = min(math.ceil(dimension_of(config.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    keep_extrapolated = (1 - ramp) * config.extrapolation_factor
    inv_freq = interpolated * (1 - keep_extrapolated) + extrapolated * keep_extrapolated
    mscale = (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0) * config.attn_factor
    return inv_freq.float(), mscale


class Grok2RotaryEmbedding(nn.Module):
    """NeoX-style ("rotate half") rotary embedding over the whole head_dim.

    The release says `rope_type: "original"`. SGLang maps that to `ScalingRotaryEmbedding(extra_method="original")`,
    whose frequencies are the plain `1 / theta^(2i/d)` (its YaRN scale is commented out), and vLLM maps it to "default":
    plain RoPE with theta = 208,533,496. llama.cpp reads it as YaRN instead; we follow SGLang.
    """

    def __init__(self, config: Grok2Config):
        super().__init__()
        dim = config.head_dim
        if config.rope_type == "yarn":
            inv_freq, self.attention_scaling = yarn_inverse_frequencies(config, dim)
        else:
            inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            inv_freq, self.attention_scaling = inv_freq.float(), 1.0
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # fp32 angles: positions up to 131072 times frequencies near 1 need more than bf16's 8 bits of mantissa.
        angles = position_ids[..., None].float() * self.inv_freq.to(x.device)
        angles = torch.cat((angles, angles), dim=-1)
        cos = angles.cos() * self.attention_scaling
        sin = angles.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [batch, heads, seq, head_dim]; cos/sin: [batch, seq, head_dim]."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


# ---------------------------------------------------------------------------------------------------- attention


def attention_temperature(position_ids: torch.Tensor, temperature_len: int) -> torch.Tensor:
    """Length-dependent attention temperature (SGLang Triton kernels, `xai_temperature_len`).

    A query at 0-based absolute position p > L has its (already soft-capped) scores multiplied by log2(p) / log2(L):
    1.0 up to L = 1024 tokens, 1.3 at 8191, 1.7 at 131071. It keeps attention sharp as the context grows.
    vLLM and llama.cpp leave it out (facts 4.6); it changes nothing for prompts shorter than L.
    """
    positions = position_ids.float()
    if temperature_len is None or temperature_len <= 0:
        return torch.ones_like(positions)
    scale = torch.log2(positions.clamp(min=1)) / math.log2(temperature_len)
    return torch.where(positions > temperature_len, scale, torch.ones_like(positions))


class Grok2Attention(nn.Module):
    """Grouped-query attention with tanh logit softcapping and the length temperature.

    Scores are `q.k / sqrt(head_dim)`, then `30 * tanh(s / 30)`, then times the temperature, then masked and softmaxed
    in fp32 (SGLang `extend_attention_fwd` / `decode_attention_fwd`, in that order). The cap is why Grok 2 cannot use
    PyTorch's fused scaled_dot_product_attention: the fused kernels have no hook between QK^T and the softmax.
    """

    def __init__(self, config: Grok2Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.scaling = self.head_dim**-0.5  # the release has no attn_output_multiplier: SGLang falls back to this
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        temperature: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)

        cos, sin = position_embeddings
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)  # appends; returns every key/value seen so far

        # Grouped-query attention without copying keys: fold the query heads that share a KV head into one axis.
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(batch, self.num_kv_heads, groups * seq, self.head_dim)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scaling
        scores = scores.view(batch, self.num_kv_heads, groups, seq, -1)
        scores = softcap(scores, self.config.attn_logit_softcapping)
        scores = scores * temperature[:, None, None, :, None]
        scores = scores.masked_fill(~attention_mask[:, :, None], float("-inf"))  # mask: [batch, 1, seq, kv]
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
        out = torch.matmul(probs.view(batch, self.num_kv_heads, groups * seq, -1), v)
        out = out.view(batch, self.num_heads, seq, self.head_dim).transpose(1, 2).reshape(batch, seq, -1)
        return self.o_proj(out)


# ------------------------------------------------------------------------------------------------- feed-forward


class Grok2MLP(nn.Module):
    """The dense "residual" MLP that runs on every token: down(gelu_tanh(gate(x)) * up(x)).

    SGLang's dense MLP uses the tanh GELU (`GeluAndMul(approximate="tanh")`); vLLM uses the exact one. Follow SGLang.
    """

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Grok2Expert(nn.Module):
    """One expert: w2(gelu(w1(x)) * w3(x)). Checkpoint names: w1 = gate, w3 = up, w2 = down.

    SGLang's FusedMoE runs the experts with activation "gelu" (exact erf), unlike its dense MLP.
    """

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.w1 = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.w2 = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.w3 = nn.Linear(hidden_size, intermediate_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x)) * self.w3(x))


class Grok2SparseMoeBlock(nn.Module):
    """Router + experts. Each token goes to its top-2 experts, weighted by their softmax probabilities.

    The router (SGLang `fused_moe_router_shim`) works in fp32, caps its logits at 30 with tanh, and does NOT
    renormalise the two chosen probabilities to sum to 1 (SGLang asserts `not renormalize`; vLLM's default for
    residual_moe agrees; llama.cpp renormalises). So a token's expert output is scaled by p1 + p2 < 1.

    The experts run in a loop, which trains and takes anything in place of an `nn.Linear` (quantized, LoRA,
    offloaded). `helpers.grok2.grouped_experts` is an optional fast path on top, with the same result.
    """

    def __init__(self, config: Grok2Config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.num_local_experts
        self.router_logit_softcapping = config.router_logit_softcapping
        self.gate = nn.Linear(config.hidden_size, config.num_local_experts, bias=False)
        self.experts = nn.ModuleList(
            [Grok2Expert(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_local_experts)]
        )

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [tokens, hidden] -> (router logits [tokens, experts], top-k weights, top-k expert indices)."""
        logits = F.linear(x.float(), self.gate.weight.float())
        logits = softcap(logits, self.router_logit_softcapping)
        weights, chosen = torch.softmax(logits, dim=-1).topk(self.top_k, dim=-1)
        return logits, weights, chosen

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        _, weights, chosen = self.route(x)
        # Accumulate in fp32 and round once at the end: a bf16 running sum would round after each expert's addition.
        out = torch.zeros_like(x, dtype=torch.float32)
        # Loop over experts, not tokens: each expert runs once on the tokens routed to it (a gather, its three
        # matmuls, a scatter-add). With 8 experts that is at most 8 small batched matmuls per layer.
        for expert_id in torch.unique(chosen).tolist():
            token_idx, slot = torch.where(chosen == expert_id)
            expert_out = self.experts[expert_id](x[token_idx])
            out.index_add_(0, token_idx, expert_out.float() * weights[token_idx, slot, None])
        return out.to(hidden_states.dtype).view(shape)


class Grok2DecoderLayer(GradientCheckpointingLayer):
    """One layer with its four "sandwich" norms, in the order of the module docstring (SGLang's `Grok1DecoderLayer`)."""

    def __init__(self, config: Grok2Config, layer_idx: int):
        super().__init__()
        self.residual_moe = config.residual_moe
        self.self_attn = Grok2Attention(config, layer_idx)
        self.block_sparse_moe = Grok2SparseMoeBlock(config)
        if config.residual_moe:
            self.mlp = Grok2MLP(config.hidden_size, config.intermediate_size)
        self.pre_attn_norm = Grok2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attn_norm = Grok2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.pre_moe_norm = Grok2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_moe_norm = Grok2RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        temperature: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        attn = self.self_attn(
            self.pre_attn_norm(hidden_states), position_embeddings, temperature, attention_mask, past_key_values
        )
        hidden_states = hidden_states + self.post_attn_norm(attn)

        x = self.pre_moe_norm(hidden_states)
        ff = self.block_sparse_moe(x)
        if self.residual_moe:
            # SGLang: `(mlp_result + moe_result) / 1.4142135623730951`. Two unit-variance branches, sum rescaled.
            ff = (ff + self.mlp(x)) / math.sqrt(2)
        return hidden_states + self.post_moe_norm(ff)


# ------------------------------------------------------------------------------------------------------- model


def build_attention_mask(padding_mask: torch.Tensor | None, past: int | torch.Tensor, query_len: int, kv_len: int,
                         batch: int, device: torch.device) -> torch.Tensor:
    """Boolean mask [batch, 1, query, kv]: True where a query may look at a key.

    Causality is by cache slot: the queries sit in slots past .. past+query_len-1 of a cache with `kv_len` slots
    (a static cache has more slots than tokens so far; the extra ones are in the future, hence masked).
    `padding_mask` is the usual 2D attention mask over the slots filled so far, or over all of a static cache's
    slots (0 = padding). A padding query whose row would be empty keeps its own slot so the softmax stays finite; no
    real token ever attends to it. `past` may be a tensor (a static cache counts on the device): it is only ever
    added, never read back, so a compiled decode step does not wait for the CPU.
    """
    query_slots = torch.arange(query_len, device=device) + past
    key_slots = torch.arange(kv_len, device=device)
    if padding_mask is not None and padding_mask.dim() == 4:
        # `generate` with a static cache hands over a ready 4D mask (bool, or additive floats for "eager").
        allowed = padding_mask if padding_mask.dtype == torch.bool else padding_mask > torch.finfo(padding_mask.dtype).min / 2
        allowed = allowed[:, 0, -query_len:, :kv_len]
        return (allowed | (key_slots[None, None, :] == query_slots[None, :, None]))[:, None]
    allowed = (key_slots[None, :] <= query_slots[:, None])[None].expand(batch, -1, -1)
    if padding_mask is not None:
        keep = padding_mask[:, :kv_len].bool()
        if keep.shape[-1] < kv_len:
            keep = F.pad(keep, (0, kv_len - keep.shape[-1]), value=False)
        allowed = allowed & keep[:, None, :]
        allowed = allowed | (key_slots[None, None, :] == query_slots[None, :, None])
    return allowed[:, None]


class Grok2PreTrainedModel(PreTrainedModel):
    config_class = Grok2Config
    config: Grok2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Grok2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    # Softcapped attention has no SDPA/flash kernel: the attention math is written out in Grok2Attention.
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    # The router's gate must stay in high precision: `helpers` keeps it out of 8/4-bit quantization.
    _keep_in_fp32_modules = None

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, Grok2RMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, Grok2RotaryEmbedding):
            fresh = Grok2RotaryEmbedding(self.config)
            module.inv_freq.copy_(fresh.inv_freq.to(module.inv_freq.device))


class Grok2Model(Grok2PreTrainedModel):
    """The decoder stack: embeddings (times sqrt(hidden)) -> N layers -> final RMSNorm."""

    def __init__(self, config: Grok2Config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Grok2DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Grok2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = Grok2RotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        # transformers >= 5.24 passes the cache as `cache` (`past_key_values` is its deprecated name); accept both.
        past_key_values = past_key_values if past_key_values is not None else cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None and not self.training:
            past_key_values = DynamicCache(config=self.config)
        if not use_cache:
            past_key_values = None

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        # SGLang: `embed_tokens(ids) * embedding_multiplier_scale` (sqrt(8192) = 90.5).
        hidden_states = inputs_embeds * self.config.embedding_multiplier_scale

        batch, seq = hidden_states.shape[:2]
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                # Left padding: the first real token is position 0, whatever slot it sits in.
                all_positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
                position_ids = all_positions[:, -seq:]
            else:
                position_ids = (torch.arange(seq, device=hidden_states.device) + past)[None].expand(batch, -1)
        position_ids = position_ids.expand(batch, -1)

        # Slots the attention will see: past + seq for a growing (dynamic) cache, the full length for a static one.
        kv_len = past_key_values.get_mask_sizes(seq, 0)[0] if past_key_values is not None else seq
        mask = build_attention_mask(attention_mask, past, seq, kv_len, batch, hidden_states.device)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        temperature = attention_temperature(position_ids, self.config.attn_temperature_len)

        for layer in self.layers:
            hidden_states = layer(hidden_states, position_embeddings, temperature, mask, past_key_values)
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{_CACHE_FIELD: past_key_values})


class Grok2ForCausalLM(Grok2PreTrainedModel, GenerationMixin):
    """Grok 2 with its (untied) LM head. `generate()` works as for any transformers model."""

    _tied_weights_keys = {}

    def __init__(self, config: Grok2Config):
        super().__init__(config)
        self.model = Grok2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        past_key_values = past_key_values if past_key_values is not None else cache  # the newer name (see Grok2Model)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        # SGLang folds the 0.5 output multiplier into the LM head weight, then caps: scale first, cap second.
        # (vLLM's LogitsProcessor caps first, then scales - a real difference, facts 4.6.)
        logits = self.lm_head(hidden_states).float() * self.config.output_multiplier_scale
        logits = softcap(logits, self.config.final_logit_softcapping)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: getattr(outputs, _CACHE_FIELD)})


__all__ = ["Grok2ForCausalLM", "Grok2Model", "Grok2PreTrainedModel", "softcap", "attention_temperature"]
