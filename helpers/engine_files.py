"""What an engine's own files say about Grok 2, read statically (nothing is installed or imported from the engine).

Three questions decide whether an engine command can work, and each has an answer in the engine's source:
- the model registry: is the architecture (`Grok1ForCausalLM`, what the released config lists) served, or listed among
  the "previously supported" models (vLLM after 0.24.0)?
- the tokenizer: can it read the release's `tokenizer.tok.json`?
- the arguments: does the engine define every option the command passes, and accept its values?

The readers below parse the files of one pinned release (`helpers.engine_sources.EngineFiles`) with Python's `ast`
(SGLang, vLLM) or by their literal option strings (llama.cpp's `common/arg.cpp`). They are written for the layouts of
the versions the course pins; a release that moves a file makes them fail loudly, never pass silently.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field

from .engine_sources import EngineFiles

ARCHITECTURE = "Grok1ForCausalLM"  # the released config's `architectures` (helpers.grok2.RELEASED_ARCHITECTURE)


@dataclass
class Finding:
    ok: bool
    evidence: str  # where in the engine's files the answer was read


@dataclass
class Options:
    names: set[str]  # every option string the parser defines
    choices: dict[str, set[str]] = field(default_factory=dict)  # option -> accepted values, where the check needs them
    abbreviations: bool = True  # argparse accepts an unambiguous prefix of a long option


def _per_release(read):
    """Remember what `read(files, ...)` found in one release's files: a wheel does not change under its name, and
    parsing SGLang's argument modules again for every command checked costs a second each time."""
    found = {}

    @functools.wraps(read)
    def cached(files: EngineFiles, *args, **kwargs):
        key = (files.spec.engine, str(files.archive), files.archive.stat().st_mtime_ns, args,
               tuple(sorted(kwargs.items())))
        if key not in found:
            found[key] = read(files, *args, **kwargs)
        return found[key]

    return cached


def _tree(files: EngineFiles, name: str) -> ast.Module:
    return ast.parse(files.read(name), filename=name)


def _literal_strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [s for item in node.elts for s in _literal_strings(item)]
    return []


def _module_assignments(tree: ast.Module) -> dict[str, ast.AST]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found[node.target.id] = node.value
    return found


def _add_argument_flags(tree: ast.Module) -> set[str]:
    flags = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            flags.update(s for arg in node.args for s in _literal_strings(arg) if s.startswith("-"))
    return flags


# ------------------------------------------------------------------------------------------------ registry


@_per_release
def served(files: EngineFiles, architecture: str = ARCHITECTURE) -> Finding:
    """Does this release serve `architecture`? (Registered, its model file present; not 'previously supported'.)"""
    engine = files.spec.engine
    if engine == "vllm":
        name = "vllm/model_executor/models/registry.py"
        tables = _module_assignments(_tree(files, name))
        previous = tables.get("_PREVIOUSLY_SUPPORTED_MODELS")
        if isinstance(previous, ast.Dict):
            for key, value in zip(previous.keys, previous.values):
                if _literal_strings(key) == [architecture]:
                    return Finding(False, f"{name}: _PREVIOUSLY_SUPPORTED_MODELS lists {architecture} with "
                                          f"{_literal_strings(value)[0]!r}, the last release that served it")
        for table, value in tables.items():
            if not (table.endswith("_MODELS") and isinstance(value, ast.Dict)) or "OOT" in table:
                continue
            for key, entry in zip(value.keys, value.values):
                if key is not None and _literal_strings(key) == [architecture] and isinstance(entry, ast.Tuple):
                    module = _literal_strings(entry.elts[0])[0]
                    path = f"vllm/model_executor/models/{module}.py"
                    if files.exists(path):
                        return Finding(True, f"{name}: {table}[{architecture!r}] -> {path}")
        return Finding(False, f"{name}: {architecture} is in no model table")
    if engine == "sglang":
        # SGLang's registry imports every module of sglang/srt/models and collects its `EntryClass`.
        if "EntryClass" not in files.read("sglang/srt/models/registry.py"):
            return Finding(False, "sglang/srt/models/registry.py no longer collects EntryClass")
        for name in files.names("sglang/srt/models/"):
            if not name.endswith(".py") or architecture not in files.read(name):
                continue
            tree = _tree(files, name)
            defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
            entry = _module_assignments(tree).get("EntryClass")
            listed = {e.id for e in getattr(entry, "elts", [entry]) if isinstance(e, ast.Name)}
            if architecture in defined and architecture in listed:
                return Finding(True, f"{name}: class {architecture}, listed in EntryClass")
        return Finding(False, f"no module of sglang/srt/models defines and registers {architecture}")
    if engine == "llama.cpp":
        arch = re.search(r'\{\s*LLM_ARCH_GROK\s*,\s*"grok"\s*\}', files.read("src/llama-arch.cpp"))
        graph = files.exists("src/models/grok.cpp")
        converter = architecture in files.read("conversion/grok.py") if files.exists("conversion/grok.py") else False
        ok = bool(arch) and graph and converter
        return Finding(ok, "src/llama-arch.cpp: LLM_ARCH_GROK = \"grok\"; src/models/grok.cpp (the graph); "
                           f"conversion/grok.py registers {architecture}" if ok else
                           "llama.cpp's grok architecture, graph or converter is missing")
    raise ValueError(engine)


# ----------------------------------------------------------------------------------------------- tokenizer


@_per_release
def reads_tok_json(files: EngineFiles) -> Finding:
    """Can this release load the release's `tokenizer.tok.json` (tiktoken format)?"""
    engine = files.spec.engine
    if engine == "vllm":
        loader = files.exists("vllm/tokenizers/grok2.py") and "tokenizer.tok.json" in files.read(
            "vllm/tokenizers/grok2.py")
        auto = re.search(rf'arch == "{ARCHITECTURE}":\s*\n\s*self\.tokenizer_mode = "grok2"',
                         files.read("vllm/config/model.py"))
        ok = bool(loader and auto)
        return Finding(ok, f"vllm/tokenizers/grok2.py reads tokenizer.tok.json; vllm/config/model.py picks "
                           f"tokenizer mode 'grok2' for {ARCHITECTURE}" if ok else "no grok2 tokenizer mode")
    if engine == "sglang":
        name = "sglang/srt/utils/hf_transformers/tokenizer.py"
        text = files.read(name) if files.exists(name) else ""
        ok = 'endswith(".json")' in text and "TiktokenTokenizer" in text and files.exists(
            "sglang/srt/tokenizer/tiktoken_tokenizer.py")
        return Finding(ok, f"{name}: a tokenizer path ending in .json loads TiktokenTokenizer "
                           "(sglang/srt/tokenizer/tiktoken_tokenizer.py)" if ok else "no tiktoken tokenizer path")
    if engine == "llama.cpp":
        # A GGUF carries its own vocabulary; what llama.cpp needs is Grok 2's pre-tokenizer.
        ok = '"grok-2"' in files.read("src/llama-vocab.cpp")
        return Finding(ok, "not needed: the GGUF embeds the vocabulary; src/llama-vocab.cpp knows the 'grok-2' "
                           "pre-tokenizer" if ok else "src/llama-vocab.cpp lacks the 'grok-2' pre-tokenizer")
    raise ValueError(engine)


# ------------------------------------------------------------------------------------------------- options


def _annotated_fields(tree: ast.Module) -> set[str]:
    """SGLang's `name: A[type, "help"]` / `A[type, Arg(cli_name=..., aliases=[...])]` fields -> option strings."""
    flags = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        annotation = node.annotation
        if not (isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") in ("A", "Annotated")):
            continue
        parts = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else []
        meta = parts[1] if len(parts) > 1 else None
        name = "--" + node.target.id.replace("_", "-")
        if isinstance(meta, ast.Call) and getattr(meta.func, "id", "") == "Arg":
            keywords = {k.arg: k.value for k in meta.keywords}
            if isinstance(keywords.get("no_cli"), ast.Constant) and keywords["no_cli"].value:
                continue
            name = (_literal_strings(keywords["cli_name"]) or [name])[0] if "cli_name" in keywords else name
            flags.update(_literal_strings(keywords.get("aliases", ast.List(elts=[]))))
        elif not (isinstance(meta, ast.Constant) and isinstance(meta.value, str)):
            continue
        flags.add(name)
    return flags


def _dataclass_fields(tree: ast.Module, classes: tuple[str, ...]) -> set[str]:
    flags = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in classes:
            flags.update("--" + item.target.id.replace("_", "-") for item in node.body
                         if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name))
    return flags


def _choices(files: EngineFiles, name: str, table: str) -> set[str]:
    value = _module_assignments(_tree(files, name)).get(table)
    if isinstance(value, ast.Subscript):  # Literal["a", "b", ...]
        value = value.slice
    return set(_literal_strings(value)) if value is not None else set()


@_per_release
def options(files: EngineFiles) -> Options:
    """The options the engine's server command defines (and the accepted values the course's commands rely on)."""
    engine = files.spec.engine
    if engine == "sglang":
        names = _add_argument_flags(_tree(files, "sglang/srt/server_args.py"))
        for name in files.names("sglang/srt/arg_groups/fields/"):
            if name.endswith(".py"):
                names |= _annotated_fields(_tree(files, name))
        choices = {"--quantization": _choices(files, "sglang/srt/arg_groups/choices.py", "QUANTIZATION_CHOICES"),
                   "--attention-backend": _choices(files, "sglang/srt/arg_groups/choices.py",
                                                   "ATTENTION_BACKEND_CHOICES")}
        return Options(names, choices)  # `sglang.launch_server` builds a plain ArgumentParser: prefixes allowed
    if engine == "vllm":
        names = _add_argument_flags(_tree(files, "vllm/engine/arg_utils.py"))
        cli_args = _tree(files, "vllm/entrypoints/openai/cli_args.py")
        names |= _add_argument_flags(cli_args) | _dataclass_fields(cli_args, ("BaseFrontendArgs", "FrontendArgs"))
        choices = {"--quantization": _choices(files, "vllm/model_executor/layers/quantization/__init__.py",
                                              "QuantizationMethods")}
        return Options(names, choices)
    if engine == "llama.cpp":
        # Each option is declared as common_arg({"-s", "--long", ...}, ...): the braces hold its names.
        text = files.read("common/arg.cpp")
        names = {flag for group in re.findall(r"common_arg\(\s*\{([^}]*)\}", text)
                 for flag in re.findall(r'"(-[^"\s]+)"', group)}
        return Options(names, abbreviations=False)  # llama.cpp matches options exactly
    raise ValueError(engine)


def check_options(argv: list[str], known: Options) -> tuple[list[str], list[str]]:
    """Problems (unknown or ambiguous options, refused values) and notes (accepted abbreviations) for `argv`."""
    problems, notes = [], []
    for i, option in enumerate(argv):
        if not option.startswith("-"):
            continue
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
        name = option
        if option not in known.names:
            longer = sorted(o for o in known.names if o.startswith(option) and o.startswith("--"))
            if known.abbreviations and option.startswith("--") and len(longer) == 1:
                name = longer[0]
                notes.append(f"{option} is not an option of its own: argparse accepts it as an abbreviation of "
                             f"{name}")
            elif known.abbreviations and len(longer) > 1:
                problems.append(f"ambiguous option {option} (could be {', '.join(longer[:4])})")
                continue
            else:
                problems.append(f"unknown option {option}")
                continue
        allowed = known.choices.get(name)
        if allowed and value is not None and value not in allowed:
            problems.append(f"{name} {value}: not among the accepted values")
    return problems, notes
