"""One setting picks the model every lesson uses, and how big each lesson's workload is.

    GROK2_COURSE_PROFILE=tiny     the built-in tiny Grok 2 (default): Grok 2's exact architecture at toy size; CPU, offline
    GROK2_COURSE_PROFILE=small    a real small mixture-of-experts instruct model that fits a free Colab T4
    GROK2_COURSE_PROFILE=grok-2   xai-org/grok-2 itself: a multi-GPU node (8 GPUs > 40 GB for FP8)

A lesson calls `get_profile()` once and reads its sizes (tokens to generate, training steps, batch...) from it, so the
same notebook runs in a minute on a laptop and does real work on a GPU node. `get_profile("small")` overrides the
environment for one call.

    GROK2_COURSE_MODEL=/data/granite-3.1-3b    the active profile's workload, but this model: a local folder (your
                                               own download, a workshop's copy) or another hub id
    GROK2_COURSE_TOKENIZER=...                 its tokenizer, when it is not in the same place (default: the model's)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import CourseError
from .paths import DATA_DIR, GROK2_RELEASED_CONFIG, TINY_MODEL_DIR

PROFILE_ENV_VAR = "GROK2_COURSE_PROFILE"
MODEL_ENV_VAR = "GROK2_COURSE_MODEL"
TOKENIZER_ENV_VAR = "GROK2_COURSE_TOKENIZER"
DEFAULT_PROFILE = "tiny"


@dataclass(frozen=True)
class LessonSizes:
    """How much work each lesson does. Scaled per profile so every notebook finishes in minutes on its hardware."""

    max_new_tokens: int  # tokens generated per answer in demos
    prompt_batch: int  # prompts generated together in batching demos
    eval_texts: int  # held-out texts for perplexity / agreement measurements
    max_seq_len: int  # longest training / evaluation sequence, in tokens
    train_steps: int  # optimizer steps in the LoRA lesson
    train_batch_size: int
    grad_accum_steps: int
    lora_rank: int
    load_test_requests: int  # requests in the deployment load test
    lora_dropout: float = 0.05  # LoRA dropout: 0.05-0.1 regularises real data; the toy run underfits, so 0 there
    learning_rate: float = 2e-4  # peak LoRA learning rate: 1e-4 to 2e-4 for real models (more wrecks what they know)
    cpu_rehearsal: bool = False  # lesson 05 runs `accelerate launch` with 2 CPU processes (a model small enough)


@dataclass(frozen=True)
class FinetuneCheck:
    """What lesson 05 asserts after training, on a profile where the course measured the outcome (the tiny one)."""

    base_f1_below: float  # the base model lacks the skill: its held-out answer F1 is under this
    f1_gain_at_least: float  # held-out answer F1 after minus before
    answer_loss_ratio_at_most: float  # held-out answer loss after / before


@dataclass(frozen=True)
class Profile:
    name: str
    model_id: str  # a hub id or a local folder
    tokenizer_id: str
    title: str
    hardware: str  # what it needs, in words
    offline: bool  # runs with no network at all
    sizes: LessonSizes
    planning_config: str  # a local config.json with the model's shape: memory plans work offline
    notes: tuple[str, ...] = field(default_factory=tuple)
    finetune_check: FinetuneCheck | None = None  # None: lesson 05 shows the outcome without asserting it


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        model_id=str(TINY_MODEL_DIR),
        tokenizer_id=str(TINY_MODEL_DIR),
        title="tiny Grok 2 (built in)",
        hardware="any CPU; ~10 MB of RAM for the weights",
        offline=True,
        planning_config=str(TINY_MODEL_DIR / "config.json"),
        sizes=LessonSizes(
            max_new_tokens=48,
            prompt_batch=4,
            eval_texts=16,
            max_seq_len=128,
            train_steps=200,
            train_batch_size=16,
            grad_accum_steps=1,
            lora_rank=16,
            load_test_requests=16,
            lora_dropout=0.0,
            learning_rate=1e-2,  # fresh adapters on a toy model: 200 steps from nothing to French answers
            cpu_rehearsal=True,
        ),
        finetune_check=FinetuneCheck(base_f1_below=0.2, f1_gain_at_least=0.2, answer_loss_ratio_at_most=0.5),
        notes=(
            "Grok 2's exact architecture (sandwich norms, softcaps, 8 experts top-2 + dense MLP) at toy size.",
            "Trained for about a minute on the course's own Q&A text: it answers course questions, nothing more.",
        ),
    ),
    "small": Profile(
        name="small",
        model_id="ibm-granite/granite-3.1-3b-a800m-instruct",
        tokenizer_id="ibm-granite/granite-3.1-3b-a800m-instruct",
        title="Granite 3.1 3B-A800M instruct (mixture of experts)",
        hardware="a GPU with >= 12 GB (free Colab T4: 15 GB) or 16 GB of RAM on CPU (slow)",
        offline=False,
        # The shape fields of the model's config.json (the architecture published for Granite 3.0/3.1 3B-A800M).
        planning_config=str(DATA_DIR / "configs" / "granite-3.1-3b-a800m-instruct.json"),
        sizes=LessonSizes(
            max_new_tokens=128,
            prompt_batch=8,
            eval_texts=64,
            max_seq_len=512,
            train_steps=150,
            train_batch_size=4,
            grad_accum_steps=4,
            lora_rank=16,
            load_test_requests=32,
        ),
        notes=(
            "A real mixture-of-experts model: 40 experts, 8 active per token; ~3.3B parameters, ~0.8B active.",
            "fp16 weights ~6.6 GB: fits a T4 with room for the KV cache and LoRA training. Apache-2.0, not gated.",
        ),
    ),
    "grok-2": Profile(
        name="grok-2",
        model_id="xai-org/grok-2",
        tokenizer_id="alvarobartt/grok-2-tokenizer",
        title="Grok 2.5 (xai-org/grok-2)",
        hardware="8 GPUs with > 40 GB each (FP8, the official SGLang path); ~540 GB in bf16; ~500 GB of disk",
        offline=False,
        planning_config=str(GROK2_RELEASED_CONFIG),
        sizes=LessonSizes(
            max_new_tokens=256,
            prompt_batch=8,
            eval_texts=64,
            max_seq_len=1024,
            train_steps=100,
            train_batch_size=1,
            grad_accum_steps=16,
            lora_rank=16,
            load_test_requests=64,
        ),
        notes=(
            "About 269.5B parameters (114B active per token). The released files are pre-sharded for 8 GPUs.",
            "The hub repo ships a tiktoken tokenizer.tok.json; the community tokenizer.json is used here.",
        ),
    ),
}


def list_profiles() -> list[Profile]:
    return list(PROFILES.values())


def get_profile(name: str | None = None) -> Profile:
    """The profile named here, else by $GROK2_COURSE_PROFILE, else `tiny`.

    $GROK2_COURSE_MODEL replaces the model of the profile in use only: a lesson that asks for another profile by name
    (lesson 03 plans Grok 2.5 with `plan_profile("grok-2")` whatever runs) gets that profile as it is."""
    active = (os.environ.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE).strip().lower()
    chosen = (name or active).strip().lower()
    if chosen not in PROFILES:
        raise CourseError(
            f"Unknown course profile {chosen!r}.",
            f"Use one of {', '.join(PROFILES)}: e.g. `export {PROFILE_ENV_VAR}=tiny` before starting Jupyter, "
            f"or `helpers.get_profile('tiny')` in a notebook.",
        )
    return with_model_override(PROFILES[chosen]) if chosen == active else PROFILES[chosen]


def with_model_override(profile: Profile) -> Profile:
    """The profile, with its model (and tokenizer) replaced by $GROK2_COURSE_MODEL ($GROK2_COURSE_TOKENIZER) if set.

    The sizes stay the profile's. A local folder must exist and hold a config.json; the memory plans then read that
    config, and the profile counts as offline."""
    import dataclasses
    from pathlib import Path

    model = os.environ.get(MODEL_ENV_VAR, "").strip()
    if not model:
        return profile
    if profile.name == "tiny":
        # The tiny lessons check what the built-in model must do (its exact answers, its fine-tuning gain).
        raise CourseError(f"{MODEL_ENV_VAR} is set, but the tiny profile always uses the built-in tiny Grok 2.",
                          f"use it with another profile (`{PROFILE_ENV_VAR}=small {MODEL_ENV_VAR}={model}`), or unset "
                          f"{MODEL_ENV_VAR}")
    tokenizer = os.environ.get(TOKENIZER_ENV_VAR, "").strip() or model
    folder = Path(model).expanduser()
    looks_local = folder.is_absolute() or model.startswith((".", "~")) or folder.exists()
    if looks_local and not (folder / "config.json").is_file():
        raise CourseError(f"{MODEL_ENV_VAR}={model!r} is not a model folder (no config.json there).",
                          f"point {MODEL_ENV_VAR} at the folder that holds config.json and the weights, or unset it "
                          f"to use the profile's own model ({profile.model_id})")
    if looks_local:
        model = str(folder.resolve())
        if tokenizer == os.environ.get(MODEL_ENV_VAR, "").strip():
            tokenizer = model
    return dataclasses.replace(
        profile, model_id=model, tokenizer_id=tokenizer,
        title=f"{profile.title}, with the model {model} ({MODEL_ENV_VAR})",
        offline=looks_local and Path(tokenizer).expanduser().exists(),
        # A hub id is planned from its config on the hub (that needs the network, as loading it does).
        planning_config=str(Path(model) / "config.json") if looks_local else model,
        notes=profile.notes + (f"Model replaced by {MODEL_ENV_VAR}; the workload sizes are the {profile.name} profile's.",))


def resolve_source(name_or_path=None, profile: str | None = None) -> str:
    """The model a call means, resolved once: a local folder or a hub id as given, or None for the profile's model
    ($GROK2_COURSE_MODEL included). `plan_load` carries it in its plan; scripts and the server ask here."""
    if name_or_path is None:
        return get_profile(profile).model_id
    return str(name_or_path)


def resolve_tokenizer_source(name_or_path=None, profile: str | None = None) -> str:
    """Where the tokenizer of that model lives: the profile's tokenizer for the profile's model (the released Grok 2
    and the GROK2_COURSE_MODEL override may keep it elsewhere), else the model's own folder or id."""
    chosen = get_profile(profile)
    if name_or_path is None or str(name_or_path) == chosen.model_id:
        return chosen.tokenizer_id
    return str(name_or_path)


def plan_profile(name: str | None = None):
    """The memory plan of a profile's model, from the config shipped in data/ (no network, no weights)."""
    from transformers import AutoConfig

    from . import grok2  # noqa: F401  (registers Grok 2)
    from .memory import plan_memory

    profile = get_profile(name)
    return plan_memory(AutoConfig.from_pretrained(profile.planning_config), name=profile.model_id)
