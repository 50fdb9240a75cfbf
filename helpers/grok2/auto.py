"""Make transformers' Auto classes understand Grok 2, including the released config's `"model_type": "git"`.

`register()` does two things, once per process:
1. registers the `grok2` model type with AutoConfig / AutoModel / AutoModelForCausalLM;
2. teaches `PreTrainedConfig.get_config_dict` - the one function through which every config file is read - that a
   config whose `architectures` list `Grok1ForCausalLM` is Grok 2, whatever its `model_type` says. The released
   `xai-org/grok-2/config.json` says `"git"`, which would otherwise build Microsoft's GIT captioning model.

Nothing else in transformers is changed. `unpatched_model_type(path)` shows what stock transformers would pick.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedConfig

from .configuration_grok2 import RELEASED_ARCHITECTURE, Grok2Config
from .modeling_grok2 import Grok2ForCausalLM, Grok2Model

_ORIGINAL_GET_CONFIG_DICT = PreTrainedConfig.get_config_dict.__func__


def is_grok2_config_dict(config_dict: dict) -> bool:
    return RELEASED_ARCHITECTURE in (config_dict.get("architectures") or [])


def _get_config_dict_with_grok2(cls, *args, **kwargs):
    config_dict, unused = _ORIGINAL_GET_CONFIG_DICT(cls, *args, **kwargs)
    if is_grok2_config_dict(config_dict) and config_dict.get("model_type") != Grok2Config.model_type:
        config_dict = {**config_dict, "model_type": Grok2Config.model_type}
    return config_dict, unused


def unpatched_model_type(pretrained_model_name_or_path, **kwargs) -> str | None:
    """The `model_type` stock transformers reads from a config (e.g. "git" for the released Grok 2)."""
    config_dict, _ = _ORIGINAL_GET_CONFIG_DICT(PreTrainedConfig, pretrained_model_name_or_path, **kwargs)
    return config_dict.get("model_type")


def register() -> None:
    """Idempotent: safe to call from every `import helpers`."""
    if getattr(PreTrainedConfig.get_config_dict, "__func__", None) is _get_config_dict_with_grok2:
        return
    AutoConfig.register(Grok2Config.model_type, Grok2Config, exist_ok=True)
    AutoModel.register(Grok2Config, Grok2Model, exist_ok=True)
    AutoModelForCausalLM.register(Grok2Config, Grok2ForCausalLM, exist_ok=True)
    PreTrainedConfig.get_config_dict = classmethod(_get_config_dict_with_grok2)
