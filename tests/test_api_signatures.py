"""Every keyword argument the course passes to transformers, peft, bitsandbytes, accelerate and huggingface_hub is one
the pinned versions accept, so a renamed or removed argument fails here, with its file and line, instead of in a
learner's notebook (or, worse, being ignored in silence).

How it works, for real rather than by a list of names:
1. Parse (ast) helpers/, scripts/ and benchmarks/ (*.py) and the code cells of every notebook (IPython `!`/`%` lines blanked).
2. Resolve each call's callee through the imports in scope (module-level and function-local, `as` names included):
   `BitsAndBytesConfig(...)`, `AutoModelForCausalLM.from_pretrained(...)`, `peft.get_peft_model(...)`,
   `snapshot_download(...)`, `PeftModel.from_pretrained(...)`, `Accelerator(...)`, ... become the library's objects.
   `<something>.generate(...)` on anything that is not an imported module is a transformers model's `generate`.
3. Collect the keywords: written out, and also those behind `**`: a dict literal, `dict(...)`, a variable built from
   them (with `x["k"] = ...` and `x.update(k=...)`), or a function of the same file that returns one (followed through
   several levels: `**_generation_arguments(...)` -> `**settings.generate_kwargs()`).
4. Check each against `inspect.signature` of the pinned library. Where the callee takes `**kwargs`, what it does with
   them is modelled, not assumed: the keys its own source reads from `kwargs` (`kwargs.pop("dtype")`...) plus where it
   forwards the rest (`from_pretrained` -> the config class's attributes; `generate` -> GenerationConfig's attributes
   and the model's `forward`; `PeftModel.from_pretrained` -> the hub download). A callee with `**kwargs` that is not
   modelled in KWARGS_POLICY fails the test, so it needs a decision, never a silent pass. BitsAndBytesConfig only logs
   unknown keywords as unused, which is why it is held to its named parameters.
5. Course functions that hand their extra keywords on (`helpers.load_model(..., quantization_config=...)` ->
   `from_pretrained`) are listed in COURSE_FORWARDERS, and those keywords are checked against the library callable.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import inspect
import json
import re
import textwrap
from dataclasses import dataclass, field


from helpers.paths import REPO_ROOT

TARGET_PACKAGES = ("transformers", "peft", "bitsandbytes", "accelerate", "huggingface_hub")
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


# ------------------------------------------------------------------------------------------------ the sources


@dataclass
class Source:
    name: str  # as shown in messages: a repository-relative path
    text: str  # Python
    where: list[str] = field(default_factory=list)  # where[line - 1]: "path:line", or "path:cell N, line M"

    def at(self, line: int) -> str:
        return self.where[line - 1] if 0 < line <= len(self.where) else f"{self.name}:{line}"


def python_source(path, root=REPO_ROOT) -> Source:
    name = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8")
    return Source(name, text, [f"{name}:{n}" for n in range(1, text.count("\n") + 2)])


def notebook_source(path, root=REPO_ROOT) -> Source:
    """The code cells as one module (later cells see earlier imports); IPython magics and shell lines blanked."""
    name = path.relative_to(root).as_posix()
    lines, where = [], []
    for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).splitlines()
        magic_cell = bool(source) and source[0].startswith("%%")
        for number, line in enumerate(source, 1):
            stripped = line.lstrip()
            if magic_cell or stripped.startswith(("!", "%")):
                line = line[: len(line) - len(stripped)] + "pass"
            lines.append(line)
            where.append(f"{name}:cell {index}, line {number}")
    return Source(name, "\n".join(lines) + "\n", where)


def course_sources() -> list[Source]:
    files = [p for folder in ("helpers", "scripts", "benchmarks") for p in sorted((REPO_ROOT / folder).rglob("*.py"))]
    notebooks = sorted(p for p in (REPO_ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return [python_source(p) for p in files] + [notebook_source(p) for p in notebooks]


# ---------------------------------------------------------------------------------------- resolving the callee


def scope_nodes(node):
    """The nodes of one scope: its descendants, not descending into nested functions, classes or lambdas."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, SCOPES):
            yield from scope_nodes(child)


def imports_of(scope, aliases: dict[str, str]) -> dict[str, str]:
    aliases = dict(aliases)
    for node in scope_nodes(scope):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def dotted(expr, aliases) -> str | None:
    if isinstance(expr, ast.Name):
        return aliases.get(expr.id)
    if isinstance(expr, ast.Attribute):
        base = dotted(expr.value, aliases)
        return f"{base}.{expr.attr}" if base else None
    return None


@functools.lru_cache(maxsize=None)
def load(path: str):
    """The object a dotted path names (module attributes included), or None."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


# -------------------------------------------------------------------------- the keywords a call passes


@dataclass(frozen=True)
class Keyword:
    name: str
    line: int  # where the keyword is written (in the same source)
    via: str = ""  # "**x" when it came through an expansion


class KeywordFinder:
    """Keywords written at a call, and those behind `**` where the dict can be read from the source."""

    def __init__(self, tree):
        self.functions: dict[str, list] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)

    def of_call(self, call, scope) -> list[Keyword]:
        found = []
        for keyword in call.keywords:
            if keyword.arg:
                found.append(Keyword(keyword.arg, keyword.lineno))
            else:
                via = "**" + ast.unparse(keyword.value)
                found += [Keyword(k.name, k.line, via) for k in self.expand(keyword.value, scope, set())]
        return found

    def expand(self, expr, scope, seen) -> list[Keyword]:
        """The string keys a dict-valued expression is known to have (an unknown part adds nothing)."""
        if isinstance(expr, ast.Dict):
            found = []
            for key, value in zip(expr.keys, expr.values):
                if key is None:
                    found += self.expand(value, scope, seen)
                elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                    found.append(Keyword(key.value, key.lineno))
            return found
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "dict":
            found = []
            for keyword in expr.keywords:
                found += [Keyword(keyword.arg, keyword.lineno)] if keyword.arg else self.expand(keyword.value, scope, seen)
            return found + [k for arg in expr.args for k in self.expand(arg, scope, seen)]
        if isinstance(expr, ast.Name):
            return self.variable(expr.id, scope, seen, expr.lineno)
        if isinstance(expr, ast.Call):  # a function of this file that returns a dict
            name = expr.func.id if isinstance(expr.func, ast.Name) else getattr(expr.func, "attr", None)
            found = []
            for function in self.functions.get(name, []):
                if id(function) in seen:
                    continue
                for node in scope_nodes(function):
                    if isinstance(node, ast.Return) and node.value is not None:
                        found += self.expand(node.value, function, seen | {id(function)})
            return found
        return []

    def variable(self, name, scope, seen, before: int) -> list[Keyword]:
        """The keys of a dict variable where it is used (line `before`): its last binding above that line, then what
        `x["k"] = ...` and `x.update(...)` add between the two."""
        bindings, mutations = [], []
        for node in scope_nodes(scope):
            if getattr(node, "lineno", before) >= before:
                continue
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == name:
                        bindings.append(node)
                    elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                          and target.value.id == name and isinstance(target.slice, ast.Constant)
                          and isinstance(target.slice.value, str)):
                        mutations.append((node.lineno, [Keyword(target.slice.value, target.lineno)]))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                  and isinstance(node.func.value, ast.Name) and node.func.value.id == name):
                keys = [Keyword(k.arg, k.lineno) for k in node.keywords if k.arg]
                mutations.append((node.lineno, keys + [k for arg in node.args for k in self.expand(arg, scope, seen)]))
        if not bindings:
            return []
        last = max(bindings, key=lambda node: node.lineno)
        found = self.expand(last.value, scope, seen)
        return found + [k for line, keys in mutations if line > last.lineno for k in keys]


# ------------------------------------------------------------------------------ what a callee accepts


def kwargs_reads(function, name: str | None = None) -> set[str]:
    """The keys a function's own source reads from its **kwargs (or from its parameter `name`, a dict handed on):
    kwargs.pop("k"), .get("k"), .setdefault("k"), kwargs["k"], "k" in kwargs."""
    if function is None:
        return set()
    try:
        parameters = inspect.signature(function).parameters.values()
        name = name or next(p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD)
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (StopIteration, TypeError, OSError, SyntaxError, ValueError):
        return set()
    keys = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                and node.func.value.id == name and node.func.attr in ("pop", "get", "setdefault") and node.args
                and isinstance(node.args[0], ast.Constant)):
            keys.add(node.args[0].value)
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == name
              and isinstance(node.slice, ast.Constant)):
            keys.add(node.slice.value)
        elif (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and len(node.ops) == 1
              and isinstance(node.ops[0], (ast.In, ast.NotIn)) and isinstance(node.comparators[0], ast.Name)
              and node.comparators[0].id == name):
            keys.add(node.left.value)
    return {k for k in keys if isinstance(k, str)}


def named(function) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind in kinds}


def takes_var_keyword(function) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(function).parameters.values())


@functools.lru_cache(maxsize=None)
def config_attributes() -> frozenset[str]:
    """What `from_pretrained(**kwargs)` may set on a config: PreTrainedConfig's attributes, and those of the configs
    the course loads (Grok 2, the `small` profile's GraniteMoe)."""
    from transformers import GraniteMoeConfig, PreTrainedConfig

    from helpers.grok2 import Grok2Config

    names = set()
    for config in (PreTrainedConfig(), Grok2Config(), GraniteMoeConfig()):
        names |= set(vars(config)) | set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    return frozenset(names)


def model_from_pretrained() -> set[str]:
    from transformers import PreTrainedModel

    function = PreTrainedModel.from_pretrained
    return named(function) | kwargs_reads(function) | config_attributes()


def config_from_pretrained() -> set[str]:
    from transformers import PreTrainedConfig

    keys = named(PreTrainedConfig.from_pretrained) | kwargs_reads(PreTrainedConfig.from_pretrained)
    for helper in ("get_config_dict", "_get_config_dict"):
        keys |= named(getattr(PreTrainedConfig, helper)) | kwargs_reads(getattr(PreTrainedConfig, helper))
    return keys | config_attributes()


def model_from_config(function) -> set[str]:
    from transformers import PreTrainedModel

    build = PreTrainedModel._from_config  # from_config hands what it does not take itself to the model class's
    return kwargs_reads(function) | named(build) | kwargs_reads(build) | config_attributes()


def generate_accepts() -> set[str]:
    from transformers import GenerationConfig, GenerationMixin

    from helpers.grok2 import Grok2ForCausalLM

    generation = GenerationConfig()
    # generate() hands its kwargs dict to this method, which takes `tokenizer`, `assistant_tokenizer`... out of it
    handed_on = kwargs_reads(getattr(GenerationMixin, "_extract_generation_mode_kwargs", None), "kwargs")
    return (named(GenerationMixin.generate) | kwargs_reads(GenerationMixin.generate) | handed_on | set(vars(generation))
            | set(generation.to_dict()) | named(Grok2ForCausalLM.forward))


def peft_from_pretrained() -> set[str]:
    from huggingface_hub import hf_hub_download
    from peft import PeftConfig, PeftModel

    return (kwargs_reads(PeftModel.from_pretrained) | named(hf_hub_download) | named(PeftConfig.from_pretrained)
            | kwargs_reads(PeftConfig.from_pretrained))


ANY = None  # accepts any keyword (the callee's own keyword set is open-ended); each use says why
# Where a callee's **kwargs go, by its qualified name (module.qualname). A callee with **kwargs not listed here fails
# the test: add it with what its source does with them.
KWARGS_POLICY = {
    # Unknown keywords are only logged as "unused kwargs": hold it to its named parameters (and what it reads itself).
    "transformers.utils.quantization_config.BitsAndBytesConfig": lambda f: kwargs_reads(f.__init__),
    "transformers.models.auto.auto_factory._BaseAutoModelClass.from_pretrained":
        lambda f: kwargs_reads(f) | model_from_pretrained(),
    "transformers.modeling_utils.PreTrainedModel.from_pretrained": lambda f: model_from_pretrained(),
    "transformers.models.auto.configuration_auto.AutoConfig.from_pretrained":
        lambda f: kwargs_reads(f) | config_from_pretrained(),
    "transformers.configuration_utils.PreTrainedConfig.from_pretrained": lambda f: config_from_pretrained(),
    # Tokenizer keywords go to the tokenizer class's own __init__, which differs per tokenizer.
    "transformers.models.auto.tokenization_auto.AutoTokenizer.from_pretrained": lambda f: ANY,
    "transformers.tokenization_utils_base.PreTrainedTokenizerBase.from_pretrained": lambda f: ANY,
    "transformers.models.auto.auto_factory._BaseAutoModelClass.from_config": lambda f: model_from_config(f),
    # A tokenizer's __init__ keeps keywords it does not know (special tokens, options of one tokenizer class).
    "transformers.tokenization_utils_tokenizers.TokenizersBackend": lambda f: ANY,
    "transformers.generation.utils.GenerationMixin.generate": lambda f: generate_accepts(),
    # Tensor subclasses: __new__ takes **kwargs and ignores them, so a misspelt setting would be lost in silence.
    "bitsandbytes.nn.modules.Params4bit": lambda f: kwargs_reads(f.__new__),
    "bitsandbytes.nn.modules.Int8Params": lambda f: kwargs_reads(f.__new__),
    "peft.peft_model.PeftModel.from_pretrained": lambda f: peft_from_pretrained(),
    # Takes **kwargs for cache types that have more settings and drops the rest: hold it to its named parameters.
    "transformers.cache_utils.StaticCache": lambda f: kwargs_reads(f.__init__),
}


# Course functions whose extra keywords (**kwargs) go on to a library callable: those keywords are checked against it.
COURSE_FORWARDERS = {
    "helpers.loading.load_model": "transformers.AutoModelForCausalLM.from_pretrained",
}


def qualified(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def signature_owner(obj):
    """The function whose signature a call is checked against (a class: its __init__), and its qualified name."""
    if inspect.isclass(obj):
        return obj, qualified(obj)
    return obj, qualified(getattr(obj, "__func__", obj))


def accepted(obj):
    """(names accepted, or ANY; None or a problem message)."""
    function, name = signature_owner(obj)
    try:
        keys = named(function)
        if not takes_var_keyword(function):
            return keys, None
    except (TypeError, ValueError):
        return ANY, None  # no introspectable signature (a C extension): nothing to check against
    if name not in KWARGS_POLICY:
        return ANY, f"{name} takes **kwargs and is not modelled in KWARGS_POLICY (tests/test_api_signatures.py)"
    extra = KWARGS_POLICY[name](function)
    return (ANY if extra is ANY else keys | set(extra)), None


# ------------------------------------------------------------------------------------------------ the check


@dataclass
class Finding:
    where: str
    callee: str
    keyword: str
    via: str = ""
    package: str = "?"

    def __str__(self):
        version = importlib.metadata.version(self.package.replace("_", "-")) if self.package in TARGET_PACKAGES else "?"
        via = f" (via {self.via})" if self.via else ""
        return f"{self.where}: {self.callee} does not accept the keyword {self.keyword!r}{via} [{self.package} {version}]"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    unmodelled: set[str] = field(default_factory=set)
    checked: dict[str, int] = field(default_factory=dict)  # callee -> keywords checked


def check_source(source: Source, report: Report) -> Report:
    tree = ast.parse(source.text, filename=source.name)
    finder = KeywordFinder(tree)

    def visit(scope, parent_aliases):
        aliases = imports_of(scope, parent_aliases)
        for node in scope_nodes(scope):
            if isinstance(node, ast.Call):
                check_call(node, scope, aliases)
            if isinstance(node, SCOPES):
                visit(node, aliases)

    def check_call(call, scope, aliases):
        path = dotted(call.func, aliases)
        obj = load(path) if path and path.split(".")[0] in TARGET_PACKAGES else None
        skip = set()
        if obj is None and path and path.split(".")[0] == "helpers":  # a course function that forwards **kwargs
            course_function = load(path)
            target = COURSE_FORWARDERS.get(qualified(course_function)) if course_function is not None else None
            if target is None:
                return
            obj, path, skip = load(target), f"{path} -> {target}", named(course_function)
        if obj is None and isinstance(call.func, ast.Attribute) and call.func.attr == "generate" and \
                dotted(call.func.value, aliases) is None:
            from transformers import GenerationMixin

            obj, path = GenerationMixin.generate, "<model>.generate (transformers GenerationMixin.generate)"
        if obj is None or not callable(obj):
            return
        keywords = [k for k in finder.of_call(call, scope) if k.name not in skip]
        keys, problem = accepted(obj)
        if problem:
            report.unmodelled.add(f"{source.at(call.lineno)}: {problem}")
            return
        report.checked[path] = report.checked.get(path, 0) + len(keywords)
        if keys is ANY:
            return
        for keyword in keywords:
            if keyword.name not in keys:
                where = source.at(keyword.line)
                if keyword.via:
                    where += f" (passed at {source.at(call.lineno)})"
                package = signature_owner(obj)[1].split(".")[0]
                report.findings.append(Finding(where, path, keyword.name, keyword.via, package))

    visit(tree, {})
    return report


@functools.lru_cache(maxsize=1)
def course_report() -> Report:
    report = Report()
    for source in course_sources():
        check_source(source, report)
    return report


# ------------------------------------------------------------------------------------------------ the tests


def test_every_keyword_is_accepted_by_the_pinned_libraries():
    report = course_report()
    assert not report.findings, "keywords the pinned libraries do not accept:\n" + "\n".join(map(str, report.findings))


def test_every_callee_with_kwargs_is_modelled():
    assert not course_report().unmodelled, "\n".join(sorted(course_report().unmodelled))


def test_the_calls_the_course_makes_are_found():
    """The checker sees the calls it exists for (an import style it cannot follow would make it pass vacuously)."""
    checked = course_report().checked
    for callee in ("transformers.BitsAndBytesConfig", "transformers.AutoModelForCausalLM.from_pretrained",
                   "peft.LoraConfig", "peft.get_peft_model", "peft.PeftModel.from_pretrained",
                   "huggingface_hub.snapshot_download", "accelerate.Accelerator",
                   "<model>.generate (transformers GenerationMixin.generate)"):
        assert checked.get(callee, 0) > 0, f"no keyword passed to {callee} was checked; checked: {sorted(checked)}"
    # generate's keywords reached through two levels of ** in helpers/chat.py are among them
    assert checked["<model>.generate (transformers GenerationMixin.generate)"] >= 20
    # lesson 03 hands quantization_config to from_pretrained through helpers.load_model
    assert checked.get("helpers.load_model -> transformers.AutoModelForCausalLM.from_pretrained", 0) >= 1, checked
    from helpers.loading import load_model

    assert takes_var_keyword(load_model), "load_model no longer forwards **kwargs: update COURSE_FORWARDERS"


PLANTED = '''\
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig as BnB
import peft
from huggingface_hub import snapshot_download


def settings():
    extra = dict(max_new_tokens=4, do_sample=False)
    extra["temprature"] = 0.5
    return extra


def arguments():
    return {"pad_token_id": 0, **settings()}


def run(model):
    from accelerate import Accelerator

    Accelerator(cpu=True, mixed_precison="no")
    quantization = BnB(load_in_4bit=True, bnb_4bit_quant_typo="nf4", bnb_4bit_compute_dtype=torch.float16)
    model = AutoModelForCausalLM.from_pretrained("x", dtype=torch.float16, quantization_config=quantization,
                                                 device_mapping="auto", use_safetensors=True)
    peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_module=["q_proj"]))
    snapshot_download("x", allow_patterns=["*.json"], max_worker=8)
    return model.generate(**arguments(), max_new_tokens=5, stop_strings=["x"], tokenizer=None)


def lesson():
    import helpers

    return helpers.load_model(quantization="nf4", verbose=False, quantisation_config=None, revision="main")
'''


def test_the_checker_catches_planted_keywords():
    report = check_source(Source("planted.py", PLANTED, [f"planted.py:{n}" for n in range(1, 40)]), Report())
    found = sorted((f.where.split(" ")[0], f.callee, f.keyword) for f in report.findings)
    assert found == sorted([
        ("planted.py:9", "<model>.generate (transformers GenerationMixin.generate)", "temprature"),
        ("planted.py:20", "accelerate.Accelerator", "mixed_precison"),
        ("planted.py:21", "transformers.BitsAndBytesConfig", "bnb_4bit_quant_typo"),
        ("planted.py:23", "transformers.AutoModelForCausalLM.from_pretrained", "device_mapping"),
        ("planted.py:24", "peft.LoraConfig", "target_module"),
        ("planted.py:25", "huggingface_hub.snapshot_download", "max_worker"),
        ("planted.py:32", "helpers.load_model -> transformers.AutoModelForCausalLM.from_pretrained", "quantisation_config"),
    ]), "\n".join(map(str, report.findings))
    message = str(next(f for f in report.findings if f.keyword == "temprature"))
    assert "planted.py:9 (passed at planted.py:26)" in message and "via **arguments()" in message
    assert re.search(r"\[transformers \d", message)
    assert not report.unmodelled


def test_the_checker_refuses_an_unmodelled_kwargs_callee():
    source = "from transformers import pipeline\npipeline('text-generation', model='x', devices=0)\n"
    report = check_source(Source("p.py", source, ["p.py:1", "p.py:2"]), Report())
    assert [u.split(": ")[0] for u in report.unmodelled] == ["p.py:2"], report
    assert "transformers.pipelines.pipeline takes **kwargs and is not modelled" in report.unmodelled.pop()


def test_notebook_lines_are_named_by_cell(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    notebook = new_notebook(cells=[new_markdown_cell("# x"), new_code_cell("!pip list\nimport peft"),
                                   new_code_cell("%%time\nx = 1"), new_code_cell("peft.LoraConfig(\n    rank=8)")])
    path = tmp_path / "n.ipynb"
    path.write_text(nbformat.writes(notebook), encoding="utf-8")
    report = check_source(notebook_source(path, root=tmp_path), Report())
    assert [str(f).split(": ")[0] for f in report.findings] == ["n.ipynb:cell 3, line 2"]
