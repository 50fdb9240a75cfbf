"""Device maps for machines you do not have: where accelerate would put each part of a model built on the meta
device, on GPUs that need not be in this computer (lesson 02: Grok 2.5 on 1, 2 and 8 GPUs, from a laptop).

    helpers.placement.modules_per_device(meta_model, {0: "72GiB", 1: "72GiB", "cpu": "512GiB"})
    # {'0': 29, '1': 30, 'cpu': 12}

accelerate checks every GPU number in `max_memory` against the GPUs present and logs one warning per missing one
("Device 0 is not available, available devices are []"): on a CPU that is a red line for each planned GPU, about
something the learner did on purpose. That one message is dropped while planning here, and only here; every other
accelerate message still shows.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

import torch

ACCELERATE_LOGGER = "accelerate.utils.modeling"
ABSENT_GPU_MESSAGE = "is not available, available devices are"


class _DropAbsentGPUWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return ABSENT_GPU_MESSAGE not in record.getMessage()


@contextlib.contextmanager
def planning_for_absent_gpus():
    """Within the block, accelerate's "Device N is not available" warning is not shown (nothing else changes)."""
    logger = logging.getLogger(ACCELERATE_LOGGER)
    quiet = _DropAbsentGPUWarnings()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def device_map_for(model, max_memory: dict, dtype: torch.dtype = torch.bfloat16, quantization_config=None) -> dict:
    """accelerate's device map of `model` (built on the meta device) for `max_memory`, GPUs present or not: whole
    decoder layers in order on the GPUs, then the CPU, then disk. Quantized layers are priced at 8 or 4 bits."""
    from .grok2.checkpoint import plan_device_map

    with planning_for_absent_gpus():
        return plan_device_map(model, max_memory, dtype, quantization_config)


def modules_per_device(model, max_memory: dict, dtype: torch.dtype = torch.bfloat16, quantization_config=None):
    """How many modules of the device map land on each device, e.g. {'0': 9, '1': 9, ..., 'cpu': 3}."""
    return dict(Counter(str(device) for device in device_map_for(model, max_memory, dtype,
                                                                 quantization_config).values()))
