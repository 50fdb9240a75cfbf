"""Grok 2 for transformers: configuration, model, Auto-class registration.

Stands alone: imports nothing else from `helpers`, so it can be read, tested and upstreamed by itself.
"""

from .auto import register, unpatched_model_type
from .configuration_grok2 import (
    EOS_TOKEN_ID,
    PAD_TOKEN_ID,
    RELEASED_ARCHITECTURE,
    SEPARATOR_TOKEN_ID,
    Grok2Config,
)
from .checkpoint import convert_released_checkpoint, load_released_checkpoint, save_in_released_layout
from .modeling_grok2 import Grok2ForCausalLM, Grok2Model
from .tokenization_grok2 import GROK2_CHAT_TEMPLATE, tokenizer_from_tok_json

register()

__all__ = [
    "Grok2Config",
    "Grok2ForCausalLM",
    "Grok2Model",
    "register",
    "load_released_checkpoint",
    "save_in_released_layout",
    "convert_released_checkpoint",
    "tokenizer_from_tok_json",
    "GROK2_CHAT_TEMPLATE",
    "unpatched_model_type",
    "PAD_TOKEN_ID",
    "SEPARATOR_TOKEN_ID",
    "EOS_TOKEN_ID",
    "RELEASED_ARCHITECTURE",
]
