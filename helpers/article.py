"""The magazine article that sends many learners here (French, August 2025; lesson 00 quotes it claim by claim):
every claim it makes, with a verdict and its evidence, and its code, run for real.

    helpers.article.claims()                 # lesson 00: [Claim(quote, english, verdict, evidence, where), ...]
    replica = helpers.article.write_replica(folder)     # xai-org/grok-2's small files, no weights
    run = helpers.article.run_article_code(replica)     # lesson 02: each line's real outcome, in a clean Python

Evidence is computed where the course can compute it (the planner, the configs, transformers itself) and otherwise
names its source, with the version read. The article's code runs in a subprocess that never imports `helpers` (stock
transformers, as a reader would have it), offline, against a local folder laid out like the released repository:
`config.json` as released, a `tokenizer.tok.json` in the released format, no weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .accelerators import ACCELERATORS
from .errors import CourseError
from .paths import GROK2_RELEASED_CONFIG, TINY_MODEL_DIR
from .tables import markdown_table
from .units import GB

# The article's "au moins 24 Go de VRAM (type NVIDIA RTX 3090 ...)": the card it names, whose "24 GB" are 24 GiB as
# sold (helpers.accelerators), so every ratio to it compares with the memory the reader really has.
ARTICLE_CARD = ACCELERATORS["RTX 3090"]
ARTICLE_VRAM_BYTES = ARTICLE_CARD.memory_bytes

# The article's code as published (its two lines of setup, then the six that load and generate).
ARTICLE_CODE: tuple[str, ...] = (
    "from transformers import AutoModelForCausalLM, AutoTokenizer",
    'model_name = "xai-org/grok-2"',
    "tokenizer = AutoTokenizer.from_pretrained(model_name)",
    'model = AutoModelForCausalLM.from_pretrained(model_name, device_map="auto")',
    'prompt = "Explique-moi la différence entre Grok 2.5 et Grok 3."',
    'inputs = tokenizer(prompt, return_tensors="pt").to(model.device)',
    "outputs = model.generate(**inputs, max_new_tokens=200)",
    "print(tokenizer.decode(outputs[0], skip_special_tokens=True))",
)
# The course's line for each of the article's, one for one (lessons 01-04 explain each).
COURSE_CODE: tuple[str, ...] = (
    "import helpers  # registers Grok 2 with transformers (helpers/grok2)",
    'model_name = "/local/grok-2"  # the folder of your download (lesson 01; the model card\'s hf download path)',
    "tokenizer = helpers.load_tokenizer(model_name)  # converts tokenizer.tok.json (tiktoken ids, Grok 2's template)",
    'model = helpers.load_model(model_name, quantization="nf4")  # plans memory first, stitches the 8 TP slices',
    'prompt = "Explique-moi la différence entre Grok 2.5 et Grok 3."',
    'inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, '
    'return_tensors="pt", return_dict=True).to(model.device)  # Human: ...<|separator|>\\n\\nAssistant:',
    "outputs = model.generate(**inputs, max_new_tokens=200)",
    'print(tokenizer.decode(outputs[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))  # the answer only',
)
# After the article's lines: what its tokenizer made of the prompt (the line itself raised nothing).
PROBES: tuple[str, ...] = ("type(tokenizer).__name__, len(tokenizer)", "tokenizer.tokenize(prompt)")
REPLICA_MARKER = ".course-article-replica"  # marks a folder write_replica built, and may therefore replace
RUN_TIMEOUT_S = 300
_MARK = "@@article@@ "

_DRIVER = r'''
import contextlib, io, json, sys, warnings
programs, probes, mark = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]

def made(line, scope):
    target = line.split("=", 1)[0].strip() if "=" in line.split("(", 1)[0] else None
    if not target or not target.isidentifier() or target not in scope:
        return None
    value = scope[target]
    return repr(value) if isinstance(value, str) else type(value).__module__.split(".")[0] + "." + type(value).__name__

def run(number, kind, line, scope):
    printed, record = io.StringIO(), {"program": number, "kind": kind, "line": line}
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "probe":
                record["value"] = repr(eval(line, scope))[:400]
            else:
                exec(compile(line, "<article>", "exec"), scope)
        record.update(ok=True, made=made(line, scope) if kind == "line" else None)
    except Exception as error:
        record.update(ok=False, error=type(error).__name__ + ": " + " ".join(str(error).split())[:400])
    record["printed"] = printed.getvalue()[:400]
    print(mark + json.dumps(record), flush=True)

for number, lines in enumerate(programs):
    scope = {}
    for line in lines:
        run(number, "line", line, scope)
    for probe in probes:
        run(number, "probe", probe, scope)
loaded = any(name == "helpers" or name.startswith("helpers.") for name in sys.modules)
print(mark + json.dumps({"kind": "end", "helpers_imported": loaded}), flush=True)
'''


# ------------------------------------------------------------------------------------------- claims and verdicts

TRUE, PARTLY, FALSE, NOT_TESTABLE = "true", "partly true", "false", "not testable here"

# What the course read, and where, for the claims it cannot compute (versions pinned to what was read).
TGI_SOURCE = ("huggingface/text-generation-inference at db931fc (2026-01-08): no Grok among the models of "
              "server/text_generation_server/models (its fallback runs transformers' own modeling, which has no "
              "Grok 2); the README says TGI is in maintenance mode since 2025-12-11 (#3345) and recommends vLLM and "
              "SGLang")
DEEPSPEED_SOURCE = ("DeepSpeed 0.19.8 (sdist) and DeepSpeed-MII 0.3.3 (wheel), read: no Grok among DeepSpeed's "
                    "inference model implementations (llama_v2, mistral, mixtral, qwen, ...) or its kernel-injection "
                    "containers; ZeRO works on any PyTorch module, but transformers has none for Grok 2")
MODEL_CARD = "the model card, https://huggingface.co/xai-org/grok-2"
LICENCE = "https://huggingface.co/xai-org/grok-2/blob/main/LICENSE"


def _article_model_name() -> str:
    """The name the article's code passes to from_pretrained (its second line, as published)."""
    line = next(line for line in ARTICLE_CODE if line.startswith("model_name ="))
    return line.split("=", 1)[1].strip().strip('"')


@dataclass(frozen=True)
class Claim:
    quote: str  # the article's words (French, as published)
    english: str
    verdict: str  # TRUE, PARTLY, FALSE or NOT_TESTABLE
    evidence: str  # computed here, or a source
    where: str  # the lesson that shows it


def claims() -> list[Claim]:
    """Every claim of the article, in its order, with a verdict and its evidence (computed now from the planner,
    the released config and the installed transformers where the course can compute it)."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from .grok2.auto import unpatched_model_type
    from .profiles import plan_profile

    grok = plan_profile("grok-2")
    bf16, nf4 = grok.weight_bytes("bf16"), grok.weight_bytes("nf4")
    h100 = ACCELERATORS["H100"]
    h100_for_nf4 = grok.gpus_needed(h100.memory_bytes, "nf4")
    model_type = unpatched_model_type(GROK2_RELEASED_CONFIG)
    stock = CONFIG_MAPPING_NAMES.get(model_type, "nothing")
    grok_types = sorted(name for name in CONFIG_MAPPING_NAMES if "grok" in name) or "none"
    article_cards = grok.gpus_needed(ARTICLE_VRAM_BYTES, "nf4")
    return [
        Claim("Dans un post publié sur X le 24 août 2025, il a annoncé",
              "announced in a post on X on 24 August 2025", NOT_TESTABLE,
              "a post on X, which the course does not read; the release itself is dated by its licence, the Grok 2 "
              f"Community License Agreement of 23 August 2025 (facts 3.5, {LICENCE})", "01, section 8"),
        Claim("Grok 2.5 est désormais disponible en open source sur Hugging Face",
              "Grok 2.5 is now open source on Hugging Face", PARTLY,
              "the weights are public (xai-org/grok-2) under xAI's own community licence, not an open-source one: "
              f"commercial use only within xAI's Acceptable Use Policy, no training of other models ({LICENCE})",
              "01, section 8"),
        Claim("Grok 3, déjà largement utilisé par les utilisateurs de la plateforme X",
              "Grok 3 is already widely used on X", NOT_TESTABLE,
              "usage of X's own product: no figure the course can run or read measures it, and the course studies "
              "xai-org/grok-2 only", "-"),
        Claim("la meilleure version de xAI en 2024", "xAI's best model of 2024", NOT_TESTABLE,
              "xAI's own description of its 2024 line-up; nothing in the weights can confirm or refute it", "-"),
        Claim("chercheurs, développeurs et entreprises peuvent désormais télécharger librement le modèle [...] "
              "l'adapter", "anyone may freely download and adapt it", PARTLY,
              f"downloading is free ({bf16 / GB:,.1f} GB in bf16, planner); fine-tuning Grok 2 itself is allowed, "
              f"using it or its outputs to train other models is not ({LICENCE})", "01, section 8; 05"),
        Claim("ou même contribuer à son amélioration", "... or even contribute to improving it", PARTLY,
              "each user can improve their own copy (fine-tuning is allowed, lesson 05), but the release holds "
              "weights, config and tokenizer, with no modeling or training code (facts 3.4), so improvements stay in "
              "each user's copy; using Grok 2 or its outputs to improve *other* models is forbidden (facts 3.5)",
              "01, section 8; 05"),
        Claim("rend Grok 2.5 facilement accessible à la communauté mondiale",
              "Hugging Face makes it easily accessible to the worldwide community", PARTLY,
              f"anyone can fetch it from the hub ({bf16 / GB:,.1f} GB in bf16, planner), under xAI's licence; running "
              f"it is another matter: the model card's route is 8 GPUs with more than 40 GB each ({MODEL_CARD}), and "
              f"even its 4-bit weights ({nf4 / GB:,.1f} GB) need {h100_for_nf4} x {h100.name} GPUs with an 8K-token "
              "KV cache (planner)", "00, section 4; 01"),
        Claim("dans la continuité d'autres acteurs ayant ouvert leurs modèles, comme Meta avec LLaMA ou Mistral AI",
              "in line with Meta (LLaMA) and Mistral AI opening their models", NOT_TESTABLE,
              "a comparison with other companies' releases, which the course does not study; what it reads is Grok "
              "2's own licence, xAI's community licence rather than an open-source one (01, section 8)", "-"),
        Claim("Grok 3 est actuellement le LLM par défaut sur X (ex-Twitter). Il est utilisé quotidiennement par des "
              "millions d'utilisateurs", "Grok 3 is X's default LLM, used daily by millions", NOT_TESTABLE,
              "a statement about X's product and its audience: no public measurement the course can run or read, "
              "and not about the released model", "-"),
        Claim("Grok 3 [...] sera rendu open source dans six mois environ", "Grok 3 will be open in about six months",
              NOT_TESTABLE, "a promise made on 24 August 2025; the course studies only xai-org/grok-2", "-"),
        Claim("Grok 4 → accessible uniquement via abonnement payant", "Grok 4 is subscription-only", NOT_TESTABLE,
              "a product offer, outside what the course can run", "-"),
        Claim("une stratégie offensive [...] un signal politique", "the strategy and politics paragraphs",
              NOT_TESTABLE, "opinions about xAI's strategy, not claims about the model", "-"),
        Claim("Son accessibilité devrait multiplier les cas d'usage [...] repositionner xAI comme un acteur "
              "incontournable", "the outlook: more uses, xAI repositioned", NOT_TESTABLE,
              "forecasts about Grok 3's future release and xAI's place in the market: nothing to run or measure", "-"),
        Claim("le modèle est disponible au format Transformers sur Hugging Face", "it is in Transformers format",
              FALSE,
              f"transformers {transformers.__version__} has no Grok model type ({grok_types}); the released "
              f"config.json says model_type {model_type!r}, which stock transformers reads as {stock}",
              "02, section 3"),
        Claim("Python 3.10+, transformers, torch (ou jax/accelerate), et éventuellement bitsandbytes",
              "Python 3.10+, transformers, torch (or jax/accelerate), bitsandbytes", PARTLY,
              "Python 3.10+ and torch: yes; transformers alone cannot load it (above); there is no JAX model in the "
              "repository (JAX runs it only through sglang-jax on TPUs, facts 3.3); bitsandbytes 4-bit works with "
              f"the course's loader: {nf4 / GB:,.1f} GB of weights (planner)", "00, 02, 03"),
        Claim("un GPU avec au moins 24 Go de VRAM (type NVIDIA RTX 3090, A6000 ou supérieur)",
              "a GPU with at least 24 GB of VRAM", FALSE,
              f"even 4-bit weights are {nf4 / GB:,.1f} GB, {nf4 / ARTICLE_VRAM_BYTES:.1f} times the 24 GB of the "
              f"{ARTICLE_CARD.name} it names ({ARTICLE_VRAM_BYTES / GB:,.1f} GB); the planner asks for {article_cards} "
              "such cards with an 8K-token KV cache", "00, section 4; 03, section 8"),
        Claim("exécuter le modèle en mode distribué via DeepSpeed", "run it distributed with DeepSpeed", FALSE,
              DEEPSPEED_SOURCE, "-"),
        Claim("[...] ou Accelerate", "... or Accelerate", PARTLY,
              "accelerate's device_map spreads the course's Grok 2 over several GPUs as a pipeline (one GPU works at "
              "a time); the official path is tensor parallelism with SGLang", "02, section 7; 06"),
        Claim("une intégration via Text Generation Inference (TGI)", "Text Generation Inference (TGI) serves it",
              FALSE, TGI_SOURCE, "06"),
        Claim("un déploiement rapide sur des services cloud compatibles comme AWS, GCP ou Azure",
              "quick deployment on AWS, GCP or Azure", FALSE,
              "none is offered: the model card's only deployment is SGLang on 8 GPUs with more than 40 GB each "
              f"({MODEL_CARD}); on any cloud that means renting such a machine and running it yourself",
              "06"),
        Claim("voici les étapes minimales à suivre", "the minimal steps to follow", PARTLY,
              "the steps it lists are needed but not enough: they are numbered 1, 3, 4, and none installs the "
              "libraries named above (transformers, torch); after `git clone` and `cd grok-2`, the Python code "
              f"names {_article_model_name()!r}, which transformers resolves as a hub repository (no folder of "
              "that name exists in the clone), so the cloned files are never read", "01; 02, section 3"),
        Claim("python -m venv venv [...] sudo apt-get install git-lfs [...] git lfs install",
              "a virtual environment, then Git LFS", TRUE,
              "both are needed: without git-lfs a clone holds pointer files where the weights should be (lesson 01 "
              "shows them); the course's own setup makes a virtual environment too", "00; 01"),
        Claim("git clone https://huggingface.co/xai-org/grok-2", "clone the repository with git", TRUE,
              f"it works, and fetches {bf16 / GB:,.1f} GB of weights, kept twice on disk by git-lfs "
              f"({2 * bf16 / GB:,.0f} GB)", "01"),
        Claim("AutoTokenizer.from_pretrained(model_name) [...] AutoModelForCausalLM.from_pretrained(model_name, "
              "device_map=\"auto\")", "the two from_pretrained lines load it", FALSE,
              "run line by line in lesson 02: the tokenizer line builds an empty BERT tokenizer without a word of "
              "Grok's vocabulary; the model line stops at once (no model.safetensors: the released files are named "
              "pytorch_model-000NN-TP-*), and every later line fails with it", "02, section 3"),
        Claim("Ce code permet de générer une première réponse avec Grok 2.5 en local",
              "this code generates a first answer locally", FALSE,
              "it generates nothing (above); a raw prompt decoded with skip_special_tokens would also hide where "
              "the answer starts and ends", "02, section 3; 04"),
        Claim("explorer le fine-tuning avec LoRA/PEFT", "fine-tune it with LoRA/PEFT", PARTLY,
              "possible with a Grok 2 module such as the course's, and allowed by the licence; no public LoRA recipe "
              "for Grok 2 was found (facts 5.2): lesson 05 computes what it needs", "05"),
        Claim("l'intégrer dans des pipelines applicatifs via l'API Transformers et LangChain",
              "use it from LangChain through the Transformers API", PARTLY,
              "LangChain talks to an OpenAI-compatible server (SGLang's, or the course's): not through transformers, "
              "which has no Grok 2", "06"),
    ]


def verdict_table(rows: list[Claim] | None = None) -> str:
    """Markdown: claim, verdict, evidence, lesson."""
    marks = {TRUE: "✅", PARTLY: "◐", FALSE: "❌", NOT_TESTABLE: "—"}
    return markdown_table([{"the article says": f"*{claim.quote}* ({claim.english})",
                            "verdict": f"{marks[claim.verdict]} {claim.verdict}", "evidence": claim.evidence,
                            "lesson": claim.where} for claim in rows or claims()])


# ---------------------------------------------------------------------------------------------- the replica folder


def write_replica(folder: str | Path) -> Path:
    """A folder laid out like `xai-org/grok-2` without its weights: the released `config.json` (byte for byte), a
    `tokenizer.tok.json` in the released tiktoken format (the tiny Grok 2's vocabulary: the real one is 131072 tokens
    on the hub), a README saying so. Written atomically; an existing folder is replaced only if this function wrote it.
    """
    from transformers import AutoTokenizer

    from .grok2.tokenization_grok2 import tok_json_from_tokenizer

    folder = Path(folder).expanduser()
    if folder.exists() and not (folder / REPLICA_MARKER).is_file():
        raise CourseError(f"{folder} exists and was not written by helpers.article.write_replica.",
                          "Pick another folder (for example under helpers.workspace_dir()), or move that one away.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        shutil.copyfile(GROK2_RELEASED_CONFIG, staging / "config.json")
        tok_json_from_tokenizer(AutoTokenizer.from_pretrained(TINY_MODEL_DIR), staging / "tokenizer.tok.json")
        (staging / "README.md").write_text(
            "A replica of the small files of https://huggingface.co/xai-org/grok-2 for the course (lesson 02):\n"
            "config.json exactly as released; tokenizer.tok.json in the released format with the tiny Grok 2's\n"
            "vocabulary; no weights (the release has 39 pytorch_model-000NN-TP-*.safetensors files).\n",
            encoding="utf-8")
        (staging / REPLICA_MARKER).write_text("written by helpers.article.write_replica\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)  # ours (marked), replaced as a whole
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


# ----------------------------------------------------------------------------------------------- the code, run


@dataclass(frozen=True)
class LineRun:
    line: str  # as the article prints it
    ran: str  # what ran: model_name pointing at the replica, trust_remote_code added if asked
    ok: bool
    outcome: str  # "made transformers.BertTokenizer", "OSError: ...", "printed ..."
    fix: str  # the course's line in its place


@dataclass(frozen=True)
class ArticleRun:
    lines: list[LineRun]
    probes: dict[str, str]  # probe expression -> its value (or error)
    helpers_imported: bool  # must be False: the run is stock transformers
    trust_remote_code: bool

    @property
    def failed(self) -> list[LineRun]:
        return [line for line in self.lines if not line.ok]

    def table(self) -> str:
        """Markdown: each line of the article, what happened, and the course's line in its place."""
        return markdown_table([{"the article's line": f"`{line.line}`",
                                "what happened": ("✅ " if line.ok else "❌ ") + line.outcome,
                                "the course's line": f"`{line.fix}`"} for line in self.lines])


def _with_trust_remote_code(line: str) -> str:
    if ".from_pretrained(" in line and line.endswith(")"):
        return line[:-1] + ", trust_remote_code=True)"
    return line


def run_article_code(folder: str | Path, trust_remote_code: bool = False, timeout_s: float = RUN_TIMEOUT_S,
                     python: str | None = None) -> ArticleRun:
    """Run the article's lines one by one in a fresh `python -I` that never imports `helpers`, offline, with
    `model_name` pointing at `folder` (a `write_replica` folder), and report each line's real outcome. A line that
    fails does not stop the next ones (they then fail as the reader's would: NameError)."""
    return run_article_code_variants(folder, (trust_remote_code,), timeout_s, python)[0]


def run_article_code_variants(folder: str | Path, trust_remote_code: tuple[bool, ...] = (False, True),
                              timeout_s: float = RUN_TIMEOUT_S, python: str | None = None) -> list[ArticleRun]:
    """`run_article_code` once per `trust_remote_code` value, all in one fresh Python (one start-up, fresh names for
    each run)."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise CourseError(f"{folder} has no config.json.", "Build the folder with helpers.article.write_replica(...).")
    offline = [f"model_name = {str(folder)!r}" if line.startswith("model_name =") else line for line in ARTICLE_CODE]
    programs = [[_with_trust_remote_code(line) for line in offline] if trust else offline for trust in trust_remote_code]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    command = [python or sys.executable, "-I", "-c", _DRIVER, json.dumps(programs), json.dumps(list(PROBES)), _MARK]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env,
                              cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired as error:
        raise CourseError(f"The article's code did not finish within {timeout_s:.0f} s (it was stopped).",
                          "Run it again on a less busy machine, or pass a larger timeout_s.") from error
    records = [json.loads(line[len(_MARK):]) for line in done.stdout.splitlines() if line.startswith(_MARK)]
    end = next((r for r in records if r["kind"] == "end"), None)
    if end is None:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise CourseError(f"The Python running the article's code stopped (exit {done.returncode}): {last}",
                          "Check that transformers is installed in this environment (lesson 00's check).")
    runs = []
    for number, trust in enumerate(trust_remote_code):
        mine = [r for r in records if r.get("program") == number]
        lines = [LineRun(published, r["line"], r["ok"], _outcome(r), fix)
                 for published, r, fix in zip(ARTICLE_CODE, [r for r in mine if r["kind"] == "line"], COURSE_CODE)]
        probes = {r["line"]: r.get("value", r.get("error", "")) for r in mine if r["kind"] == "probe"}
        runs.append(ArticleRun(lines, probes, end["helpers_imported"], trust))
    return runs


def _outcome(record: dict) -> str:
    if not record["ok"]:
        return record["error"]
    if record.get("printed"):
        return "printed " + repr(record["printed"][:120])
    if record.get("made"):
        return f"no error; made {record['made']}"
    return "no error"
