"""Configuration of Grok 2 (xAI's Grok 2.5, released as `xai-org/grok-2`).

The attribute names are the keys of the released `config.json`, so that file loads as it is. The defaults are the
released values (facts: grok2-facts.md section 1.1). Two quirks of the released file are handled here rather than in
the file:

* `"model_type": "git"`: the released config names Microsoft's GIT captioning model. transformers would build the
  wrong network from it. This class registers its own model type; `helpers.grok2.auto` routes any config whose
  `architectures` say `Grok1ForCausalLM` to this class, whatever its `model_type`.
* No token ids: the released config has no `bos/eos/pad_token_id`. Grok 2's tokenizer puts `<|pad|>` at 0,
  `<|separator|>` at 1 and `<|eos|>` at 2 and has no BOS; those are the defaults below.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

# Ids of Grok 2's control tokens (facts 2.2). A chat turn ends with `<|separator|>`; `<|eos|>` ends a document.
PAD_TOKEN_ID = 0
SEPARATOR_TOKEN_ID = 1
EOS_TOKEN_ID = 2

# The keys of the released config.json, in the file's order (a checkpoint written "as released" has exactly these).
RELEASED_CONFIG_KEYS = (
    "architectures",
    "embedding_multiplier_scale",
    "output_multiplier_scale",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "max_position_embeddings",
    "num_experts_per_tok",
    "num_local_experts",
    "residual_moe",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "head_dim",
    "rms_norm_eps",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "router_logit_softcapping",
    "rope_theta",
    "attn_temperature_len",
    "sliding_window_size",
    "global_attn_every_n",
    "model_type",
    "torch_dtype",
    "rope_type",
    "original_max_position_embeddings",
    "scaling_factor",
    "extrapolation_factor",
    "attn_factor",
    "beta_fast",
    "beta_slow",
)

# The class name that the released checkpoint, SGLang and vLLM use for Grok 2.
RELEASED_ARCHITECTURE = "Grok1ForCausalLM"


class Grok2Config(PreTrainedConfig):
    r"""Grok 2's hyper-parameters. Defaults reproduce the released 269.5B-parameter model.

    Model shape: `vocab_size`, `hidden_size`, `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`
    (grouped-query attention), `head_dim`.

    Feed-forward: every layer has a mixture of `num_local_experts` GeGLU experts of width `moe_intermediate_size`,
    `num_experts_per_tok` of which run per token; with `residual_moe` a dense GeGLU MLP of width `intermediate_size`
    runs beside them on every token and the two outputs are summed and divided by sqrt(2).

    Scales and caps (all from SGLang's `grok.py`): `embedding_multiplier_scale` multiplies the token embeddings,
    `output_multiplier_scale` the LM-head logits; `final_logit_softcapping`, `attn_logit_softcapping` and
    `router_logit_softcapping` squash logits with `cap * tanh(x / cap)`; `attn_temperature_len` sharpens attention for
    queries beyond that position by `log2(pos) / log2(attn_temperature_len)`.

    RoPE: `rope_theta` is the base; `rope_type` "original" (the release) means plain RoPE, as SGLang and vLLM read it;
    "yarn" uses `scaling_factor`, `original_max_position_embeddings`, `beta_fast`, `beta_slow`,
    `extrapolation_factor` and `attn_factor`.

    `sliding_window_size` (-1: none) and `global_attn_every_n` (1: every layer global) are kept for the file's sake;
    the released model uses neither, and other values are refused.
    """

    model_type = "grok2"
    keys_to_ignore_at_inference = ["past_key_values"]

    architectures: list[str] | None = None
    embedding_multiplier_scale: float = 90.50966799187809
    output_multiplier_scale: float = 0.5
    vocab_size: int = 131072
    hidden_size: int = 8192
    intermediate_size: int = 32768
    moe_intermediate_size: int = 16384
    max_position_embeddings: int = 131072
    num_experts_per_tok: int = 2
    num_local_experts: int = 8
    residual_moe: bool = True
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    num_hidden_layers: int = 64
    head_dim: int = 128
    rms_norm_eps: float = 1e-05
    final_logit_softcapping: float | None = 50.0
    attn_logit_softcapping: float | None = 30.0
    router_logit_softcapping: float | None = 30.0
    rope_theta: float = 208533496.0
    attn_temperature_len: int = 1024
    sliding_window_size: int = -1
    global_attn_every_n: int = 1
    rope_type: str = "original"
    original_max_position_embeddings: int = 8192
    scaling_factor: float = 16.0
    extrapolation_factor: float = 1.0
    attn_factor: float = 1.0
    beta_fast: float = 8.0
    beta_slow: float = 1.0

    # Not in the released file; standard transformers settings with Grok 2's values.
    pad_token_id: int | None = PAD_TOKEN_ID
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = EOS_TOKEN_ID
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        # The released file carries the wrong model type; it describes nothing here, so drop it.
        kwargs.pop("model_type", None)
        if self.architectures is None:
            self.architectures = [RELEASED_ARCHITECTURE]
        super().__post_init__(**kwargs)
        self.validate_grok2()

    def validate_grok2(self) -> None:
        """Refuse settings this implementation does not model, with the reason."""
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads}) for grouped-query attention."
            )
        if self.num_experts_per_tok > self.num_local_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) cannot exceed num_local_experts "
                f"({self.num_local_experts})."
            )
        if self.rope_type not in ("original", "default", "yarn"):
            raise ValueError(f"rope_type {self.rope_type!r} is not supported; use 'original' (plain RoPE) or 'yarn'.")
        if self.sliding_window_size not in (-1, None) or self.global_attn_every_n != 1:
            raise ValueError(
                "Grok 2 uses global attention in every layer (sliding_window_size=-1, global_attn_every_n=1); "
                "other values are not implemented."
            )

    def to_dict(self) -> dict:
        # `save_pretrained` records the Python class name (Grok2ForCausalLM). Write the released name instead, the one
        # SGLang and vLLM dispatch on, so a model saved here (e.g. after merging a LoRA adapter) serves there as is.
        output = super().to_dict()
        if output.get("architectures"):
            output["architectures"] = [
                RELEASED_ARCHITECTURE if name == "Grok2ForCausalLM" else name for name in output["architectures"]
            ]
        return output

    @property
    def num_key_value_groups(self) -> int:
        """Query heads that share one key/value head (8 in Grok 2)."""
        return self.num_attention_heads // self.num_key_value_heads


__all__ = ["Grok2Config", "RELEASED_CONFIG_KEYS", "PAD_TOKEN_ID", "SEPARATOR_TOKEN_ID", "EOS_TOKEN_ID", "RELEASED_ARCHITECTURE"]
