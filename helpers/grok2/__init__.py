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
from .modeling_grok2 import Grok2ForCausalLM, Grok2Model

register()

__all__ = [
    "Grok2Config",
    "Grok2ForCausalLM",
    "Grok2Model",
    "register",
    "unpatched_model_type",
    "PAD_TOKEN_ID",
    "SEPARATOR_TOKEN_ID",
    "EOS_TOKEN_ID",
    "RELEASED_ARCHITECTURE",
]
