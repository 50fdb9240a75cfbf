"""Test-wide settings: never touch the network, always the tiny profile unless a test says otherwise."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GROK2_COURSE_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
