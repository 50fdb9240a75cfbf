"""helpers/placement.py: device maps for GPUs this machine does not have, without accelerate's warning about each
missing GPU, and with every other accelerate message left alone."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import placement


@pytest.fixture(scope="module")
def grok(grok2_config):  # tests/conftest.py
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(grok2_config)  # Grok 2.5's shapes, no memory


def test_plans_for_absent_gpus_without_their_warning(caplog, grok):
    absent = torch.cuda.device_count()  # the first GPU number this machine does not have
    caplog.set_level(logging.WARNING, logger=placement.ACCELERATE_LOGGER)
    counts = placement.modules_per_device(grok, {absent: "72GiB", absent + 1: "72GiB", "cpu": "512GiB"})
    assert set(counts) == {str(absent), str(absent + 1), "cpu"}
    assert placement.ABSENT_GPU_MESSAGE not in caplog.text


def test_eight_gpus_hold_every_layer_and_the_filter_is_removed_afterwards(caplog, grok):
    counts = placement.modules_per_device(grok, {i: "72GiB" for i in range(8)})
    assert "cpu" not in counts and sum(counts.values()) >= grok.config.num_hidden_layers
    caplog.set_level(logging.WARNING, logger=placement.ACCELERATE_LOGGER)
    logger = logging.getLogger(placement.ACCELERATE_LOGGER)
    with placement.planning_for_absent_gpus():
        logger.warning("another accelerate warning")  # still shown
    logger.warning("Device 9 is not available, available devices are []")  # outside the block: shown again
    assert "another accelerate warning" in caplog.text and "Device 9 is not available" in caplog.text
    assert not logger.filters
