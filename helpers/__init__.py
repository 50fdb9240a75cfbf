"""The course's helpers: the few names a lesson uses. Importing this registers Grok 2 with transformers."""

from . import grok2

__all__ = ["grok2"]
