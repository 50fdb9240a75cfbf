"""Test-wide settings and the fixtures several test files share: never touch the network, always the tiny profile
unless a test says otherwise."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GROK2_COURSE_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]


def _import_repo_file(name: str):
    """A script of scripts/ or benchmarks/, imported from its file (they are programs, not part of the package). A
    sibling it imports by name (`from build_tiny_grok2 import ...`) is imported the same way first."""
    if name in sys.modules:
        return sys.modules[name]
    path = next((REPO / folder / f"{name}.py" for folder in ("scripts", "benchmarks")
                 if (REPO / folder / f"{name}.py").exists()), None)
    if path is None:
        raise ModuleNotFoundError(f"no scripts/{name}.py or benchmarks/{name}.py")
    while True:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            return module
        except ModuleNotFoundError as error:
            del sys.modules[name]
            sibling = error.name
            if not sibling or not any((REPO / f / f"{sibling}.py").exists() for f in ("scripts", "benchmarks")):
                raise
            _import_repo_file(sibling)
        except BaseException:
            del sys.modules[name]
            raise


@pytest.fixture(scope="session")
def repo_script():
    """repo_script("decode_speed") -> the module of benchmarks/decode_speed.py (or scripts/<name>.py)."""
    return _import_repo_file


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model's matrices are too small to split between threads: on a busy 2-core machine two threads spin-wait
    for each other (generate() ran 5-15 times slower, measured), and one thread also makes float results independent
    of the core count. Restored afterwards. Use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    """The tiny Grok 2, loaded the way the lessons load it (one per test module: some tests change it)."""
    import helpers

    return helpers.load_model(verbose=False)


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny Grok 2's tokenizer (never modified by a test)."""
    import helpers

    return helpers.load_tokenizer()


@pytest.fixture(scope="session")
def grok2_config():
    """The released Grok 2.5 config.json (data/grok-2-config.json) as a Grok2Config. Shared by the whole run: a test
    that needs to change it works on `Grok2Config(**grok2_config.to_dict())`."""
    from transformers import AutoConfig

    import helpers

    return AutoConfig.from_pretrained(helpers.GROK2_RELEASED_CONFIG)


@pytest.fixture(scope="session")
def grok2_plan(grok2_config):
    """The memory plan of Grok 2.5 (helpers.memory.plan_memory on the released config, built on the meta device)."""
    from helpers.memory import plan_memory

    return plan_memory(grok2_config, "xai-org/grok-2")


# A small random Grok 2: every part of the architecture, tiny widths. The tests that need other sizes (wider matrices
# for bitsandbytes, caps that fire on short sequences) pass them as overrides.
TINY_GROK2 = dict(vocab_size=120, hidden_size=32, intermediate_size=64, moe_intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, initializer_range=0.2)


@pytest.fixture(scope="session")
def tiny_grok2_config():
    """tiny_grok2_config(**overrides) -> a new Grok2Config of TINY_GROK2's sizes with `overrides` applied; the
    embedding multiplier follows the hidden size (sqrt of it, as in the release) unless given."""
    from helpers.grok2 import Grok2Config

    def make(**overrides):
        values = {**TINY_GROK2, **overrides}
        values.setdefault("embedding_multiplier_scale", values["hidden_size"] ** 0.5)
        return Grok2Config(**values)

    return make


@pytest.fixture(scope="session")
def rejects():
    """rejects(check, *args, match="...", **kwargs): the exercise check must fail with a message that starts with ❌
    (and contains `match`); returns the message."""
    from helpers.exercises import ExerciseFailed

    def check_rejects(check, *args, match: str | None = None, **kwargs) -> str:
        with pytest.raises(ExerciseFailed) as caught:
            check(*args, **kwargs)
        message = str(caught.value)
        assert message.startswith("❌"), message
        if match:
            assert match in message, message
        return message

    return check_rejects


def _provided_or_skip(found, what: str):
    """An engine file or binary the test needs: skipped where it is not on this machine, a failure where
    `bash scripts/course.sh test` provided it (it sets GROK2_COURSE_REQUIRE_ENGINES=1 after fetching and building)."""
    if found is not None:
        return found
    fix = "`bash scripts/course.sh test` (or `python -m helpers.engine_sources prepare`) provides it"
    if os.environ.get("GROK2_COURSE_REQUIRE_ENGINES") == "1":
        pytest.fail(f"{what} is missing, and this run requires it: {fix}")
    pytest.skip(f"{what} is not on this machine: {fix}")


@pytest.fixture(scope="session")
def engine_release():
    """engine_release("vllm") -> the pinned release's files (helpers.engine_sources), never downloaded by a test."""
    from helpers import engine_sources

    return lambda engine: _provided_or_skip(engine_sources.release_files(engine, download=False),
                                            f"the {engine} {engine_sources.ENGINES[engine].version} release files")


@pytest.fixture(scope="session")
def llama_cpp_tool():
    """llama_cpp_tool("llama-server") -> the binary built from the pinned llama.cpp (helpers.engine_sources)."""
    from helpers import engine_sources

    return lambda name: _provided_or_skip(engine_sources.llama_cpp_binary(name), f"llama.cpp's {name}")
