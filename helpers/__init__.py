"""The course's helpers: the few names a lesson uses. Importing this registers Grok 2 with transformers.

    profile = helpers.get_profile()            # which model, and how big each lesson's workload is
    model = helpers.load_model()               # the profile's model, typed and placed for this machine
    tokenizer = helpers.load_tokenizer()
    plan = helpers.plan_memory(config)         # parameters, bytes per precision, KV cache, GPUs needed
"""

import importlib.util

from .errors import CourseError
from .lesson_checks import expect
from .paths import GROK2_RELEASED_CONFIG, TINY_MODEL_DIR, workspace_dir
from .profiles import PROFILE_ENV_VAR, get_profile, list_profiles, plan_profile
from .units import format_bytes

# `helpers.download` must work on a machine without PyTorch (fetch weights where you cannot run them): everything
# that needs torch is imported only where torch exists.
if importlib.util.find_spec("torch") is not None:
    from . import grok2
    from .loading import load_config, load_model, load_tokenizer, plan_load
    from .memory import grok2_parameter_breakdown, plan_memory

__all__ = [
    "grok2",
    "CourseError",
    "expect",
    "get_profile",
    "list_profiles",
    "plan_profile",
    "PROFILE_ENV_VAR",
    "load_config",
    "load_model",
    "load_tokenizer",
    "plan_load",
    "plan_memory",
    "grok2_parameter_breakdown",
    "format_bytes",
    "GROK2_RELEASED_CONFIG",
    "TINY_MODEL_DIR",
    "workspace_dir",
]
