"""The engines' own files at the versions the course checks its commands against, cached outside the clone.

SGLang and vLLM are multi-GB CUDA installs, and installing them proves nothing about a command. What decides whether
a command runs is in a few of their files: the model registry (is `Grok1ForCausalLM` served?), the tokenizer loader
(does it read `tokenizer.tok.json`?) and the argument definitions. So the course downloads each pinned wheel from PyPI
without dependencies and reads those files (`helpers.engines.check_command`). llama.cpp comes as the source vendored
in llama-cpp-python's sdist; `build_llama_cpp()` compiles `llama-server` and `llama-quantize` from it, CPU only, once
per machine.

    python -m helpers.engine_sources status     # what is cached, and where
    python -m helpers.engine_sources fetch      # the pinned wheels and the sdist, from PyPI (~400 MB, once)
    python -m helpers.engine_sources build      # llama-server + llama-quantize (minutes; once per machine)
    python -m helpers.engine_sources prepare    # both: what `bash scripts/course.sh test` runs

The cache is `$GROK2_COURSE_CACHE`, else `$XDG_CACHE_HOME/grok2-course`, else `~/.cache/grok2-course`: outside the
clone, so a fresh clone on a warm machine pays nothing. Every write is atomic (a temporary name, then a rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CourseError
from .hardware import cpu_cores
from .paths import REPO_ROOT


@dataclass(frozen=True)
class EngineRelease:
    """One engine at the version the course names, and how PyPI ships the files the course reads."""

    engine: str  # "sglang", "vllm", "llama.cpp"
    package: str  # the PyPI name
    version: str
    kind: str  # "wheel" (read in place) or "sdist" (unpacked: llama.cpp is built from it)
    pip_options: tuple[str, ...] = ()  # what makes `pip download` pick the same file on any machine


# The versions every command of `helpers.engines` was checked against (one home; engines.py imports it). vLLM stops
# at 0.24.0: later releases list Grok among the "previously supported" models (tests/test_engines.py reads both).
ENGINES = {
    "sglang": EngineRelease("sglang", "sglang", "0.5.23", "wheel", (
        "--only-binary", ":all:", "--platform", "manylinux_2_34_x86_64", "--platform", "manylinux_2_28_x86_64",
        "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")),
    "vllm": EngineRelease("vllm", "vllm", "0.24.0", "wheel", (
        "--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
        "--implementation", "cp", "--abi", "abi3")),
    "llama.cpp": EngineRelease("llama.cpp", "llama-cpp-python", "0.3.36", "sdist", ("--no-binary", ":all:")),
}
LLAMA_CPP_TARGETS = ("llama-server", "llama-quantize")
# The measured build, quoted when a build starts (written by benchmarks/llama_cpp_build.py on the course's machine).
BUILD_RECORD = REPO_ROOT / "benchmarks" / "results" / "llama-cpp-build.json"
PIP_TIMEOUT_S = 1800  # a 280 MB wheel on a slow line; pip's own --timeout bounds each stalled read
BUILD_TIMEOUT_S = 3 * 3600


def cache_dir() -> Path:
    root = os.environ.get("GROK2_COURSE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(root) if os.environ.get("GROK2_COURSE_CACHE") else Path(root) / "grok2-course"
    path.mkdir(parents=True, exist_ok=True)
    return path


def release(engine: str) -> EngineRelease:
    if engine not in ENGINES:
        raise CourseError(f"Unknown engine {engine!r}.", f"use one of {', '.join(ENGINES)}")
    return ENGINES[engine]


@contextlib.contextmanager
def _locked(name: str):
    """One download or build at a time per cache (two test runs on one machine wait for each other)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one run at a time is then the user's care
        yield
        return
    with open(cache_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], timeout: float, log_path: Path | None = None, cwd: Path | None = None) -> None:
    """Run a command in its own process group; on a timeout, an error or Ctrl+C the whole group is killed."""
    out = open(log_path, "a") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if log_path else None,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    finally:
        if log_path:
            out.close()
    if code != 0:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
        raise subprocess.CalledProcessError(code, argv, output=tail)


# ------------------------------------------------------------------------------------------- downloads


def downloaded(engine: str) -> Path | None:
    """The cached wheel or sdist of the pinned version, if it is there."""
    spec = release(engine)
    stem = spec.package.replace("-", "_")
    suffix = ".whl" if spec.kind == "wheel" else ".tar.gz"
    found = sorted((cache_dir() / "downloads").glob(f"{stem}-{spec.version}*{suffix}"))
    return found[0] if found else None


def fetch(engine: str) -> Path:
    """Download the pinned wheel (or sdist) with pip, without dependencies, into the cache; return its path."""
    spec = release(engine)
    if (path := downloaded(engine)) is not None:
        return path
    target = cache_dir() / "downloads"
    target.mkdir(exist_ok=True)
    with _locked(f"fetch-{engine}"):
        if (path := downloaded(engine)) is not None:
            return path
        with tempfile.TemporaryDirectory(dir=target, prefix=".partial-") as scratch:
            argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                    "--timeout", "60", *spec.pip_options, "--dest", scratch, f"{spec.package}=={spec.version}"]
            try:
                _run(argv, PIP_TIMEOUT_S, Path(scratch) / "pip.log")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                detail = getattr(error, "output", "") or ""
                raise CourseError(f"Could not download {spec.package}=={spec.version} from PyPI.\n{detail[-800:]}",
                                  "check the connection to pypi.org (a proxy needs HTTPS_PROXY), then run "
                                  "`python -m helpers.engine_sources fetch` again") from error
            files = [p for p in Path(scratch).iterdir() if p.name != "pip.log"]
            if len(files) != 1:
                raise CourseError(f"pip left {len(files)} files for {spec.package}=={spec.version}.",
                                  "delete the cache folder named by `python -m helpers.engine_sources status`")
            final = target / files[0].name
            os.replace(files[0], final)
    return final




# --------------------------------------------------------------------------------------------- reading


class EngineFiles:
    """Read files of an engine release without installing it: from the wheel in place, or the unpacked sdist."""

    def __init__(self, engine: str, archive: Path):
        self.spec = release(engine)
        self.archive = archive
        self._zip = zipfile.ZipFile(archive) if self.spec.kind == "wheel" else None
        self._root = None if self._zip else llama_cpp_source()

    @property
    def version(self) -> str:  # read from the file name: a test may open another release's wheel the same way
        return self.archive.name.split("-")[1].removesuffix(".tar.gz")

    @property
    def label(self) -> str:
        return f"{self.spec.package} {self.version} ({self.archive.name})"

    def names(self, prefix: str = "") -> list[str]:
        if self._zip:
            return [n for n in self._zip.namelist() if n.startswith(prefix)]
        base = self._root / prefix
        return sorted(str(p.relative_to(self._root)) for p in base.rglob("*") if p.is_file()) if base.exists() else []

    def exists(self, name: str) -> bool:
        if self._zip:
            return name in self._zip.NameToInfo
        return (self._root / name).is_file()

    def read(self, name: str) -> str:
        if not self.exists(name):
            raise FileNotFoundError(f"{name} is not in {self.label}")
        if self._zip:
            return self._zip.read(name).decode("utf-8", errors="replace")
        return (self._root / name).read_text(encoding="utf-8", errors="replace")


def release_files(engine: str, download: bool = False) -> EngineFiles | None:
    """The pinned release's files, or None when they are not cached and `download` is False (the default: nothing
    reaches for the network unless asked; `fetch` and `bash scripts/course.sh test` download)."""
    archive = downloaded(engine) or (fetch(engine) if download else None)
    if archive is None:
        return None
    if release(engine).kind == "sdist" and not _unpacked_marker().exists():
        llama_cpp_source()
    return EngineFiles(engine, archive)


# ------------------------------------------------------------------------------------------- llama.cpp


def llama_cpp_home() -> Path:
    return cache_dir() / f"llama.cpp-{release('llama.cpp').version}"


def _unpacked_marker() -> Path:
    return llama_cpp_home() / "src" / ".complete"


# Parts of the vendored tree the build never reads (test vocabularies, documentation): about 110 of its 176 MB.
_SKIPPED = ("models/", "docs/", "benches/", "media/")


def llama_cpp_source(download: bool = False) -> Path:
    """The llama.cpp tree vendored in the pinned llama-cpp-python sdist, unpacked once into the cache."""
    home = llama_cpp_home()
    root = home / "src"
    if _unpacked_marker().exists():
        return root
    archive = downloaded("llama.cpp") or (fetch("llama.cpp") if download else None)
    if archive is None:
        raise CourseError("llama.cpp's source is not in the cache.",
                          "run `python -m helpers.engine_sources fetch` (it downloads llama-cpp-python's sdist)")
    spec = release("llama.cpp")
    prefix = f"llama_cpp_python-{spec.version}/vendor/llama.cpp/"
    home.mkdir(parents=True, exist_ok=True)
    with _locked("unpack-llama.cpp"):
        if _unpacked_marker().exists():
            return root
        scratch = Path(tempfile.mkdtemp(dir=home, prefix=".unpack-"))
        try:
            with tarfile.open(archive) as tar:
                members = []
                for member in tar.getmembers():
                    inner = member.name[len(prefix):] if member.name.startswith(prefix) else ""
                    if not inner or inner.startswith(_SKIPPED):
                        continue
                    if inner.startswith("/") or ".." in Path(inner).parts or member.issym() or member.islnk():
                        continue  # nothing may land outside the folder (the sdist has no links anyway)
                    member.name = inner
                    members.append(member)
                tar.extractall(scratch, members=members)
            (scratch / ".complete").write_text(archive.name + "\n")
            if root.exists():
                shutil.rmtree(root)  # a tree without its marker is a half-finished unpack of ours
            os.replace(scratch, root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return root


def llama_cpp_binary(name: str = "llama-server") -> Path | None:
    path = llama_cpp_home() / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _build_tools() -> tuple[str, list[str]]:
    """cmake, a C++ compiler and a build tool, or a CourseError that says how to install them."""
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    compiler = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if compiler is None:
        missing.append("a C++ compiler (g++ or clang++)")
    if missing:
        raise CourseError(
            f"Building llama.cpp's llama-server needs {' and '.join(missing)}, which this machine lacks.",
            "Debian/Ubuntu: sudo apt-get install build-essential cmake; Fedora: sudo dnf install gcc-c++ cmake; "
            "macOS: xcode-select --install && brew install cmake. Then run `bash scripts/course.sh test` again")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    return compiler, generator


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load_average() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 1)
    return None


def expected_build_minutes() -> str:
    """What the last measured build took (benchmarks/results/llama-cpp-build.json), for the message before a build."""
    try:
        record = json.loads(BUILD_RECORD.read_text())
        return f"about {record['minutes']:.0f} minutes on {record['machine']} (measured, {BUILD_RECORD.name})"
    except (OSError, ValueError, KeyError):
        return "several minutes (not yet measured on this machine)"


def build_llama_cpp(jobs: int | None = None, say=print) -> dict:
    """Compile llama-server and llama-quantize (CPU only, static) into `<cache>/llama.cpp-<version>/bin`.

    Nothing else is built: no tests, examples, GPU back-ends or web UI. The binaries appear together by one rename,
    so a killed build leaves no half-built `bin/`. Returns what was built and how long it took."""
    home = llama_cpp_home()
    if all(llama_cpp_binary(t) for t in LLAMA_CPP_TARGETS):
        return {"built": False, "bin": str(home / "bin")}
    compiler, generator = _build_tools()
    source = llama_cpp_source(download=True)
    jobs = jobs or cpu_cores()  # the cores this process may use, not the machine's (containers, taskset)
    with _locked("build-llama.cpp"):
        if all(llama_cpp_binary(t) for t in LLAMA_CPP_TARGETS):
            return {"built": False, "bin": str(home / "bin")}
        say(f"Building {', '.join(LLAMA_CPP_TARGETS)} from llama.cpp as vendored in llama-cpp-python "
            f"{release('llama.cpp').version} (CPU only, {jobs} jobs): {expected_build_minutes()}. Once per machine; "
            f"the log is {home / 'build.log'}.")
        build = home / "build"  # kept: an interrupted build resumes where it stopped
        log = home / "build.log"
        log.write_text("")
        started, load = time.monotonic(), _load_average()
        cpu_before = _children_cpu_seconds()
        configure = ["cmake", "-S", str(source), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
                     f"-DCMAKE_CXX_COMPILER={shutil.which(compiler) or compiler}",
                     "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                     "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_APP=OFF",
                     "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
                     "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF", "-DGGML_BLAS=OFF"]
        try:
            _run(configure, 600, log)
            _run(["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs), "--target",
                  *LLAMA_CPP_TARGETS], BUILD_TIMEOUT_S, log)
        except subprocess.CalledProcessError as error:
            raise CourseError(f"The llama.cpp build failed (exit code {error.returncode}):\n{error.output[-1500:]}",
                              f"read {log}; a missing compiler or CMake older than 3.14 are the usual causes") \
                from error
        seconds = time.monotonic() - started
        cpu_seconds = _children_cpu_seconds() - cpu_before
        staging = Path(tempfile.mkdtemp(dir=home, prefix=".bin-"))
        try:
            for target in LLAMA_CPP_TARGETS:
                built = next(build.rglob(target), None)
                if built is None:
                    raise CourseError(f"The build finished without {target}.", f"read {log}")
                shutil.copy2(built, staging / target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        info = {"built": True, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                "load_average_at_start": load, "jobs": jobs, "targets": list(LLAMA_CPP_TARGETS),
                "llama_cpp_python": release("llama.cpp").version, "compiler": compiler,
                "generator": generator[1] if generator else "default"}
        (staging / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        if (home / "bin").exists():
            shutil.rmtree(home / "bin")
        os.replace(staging, home / "bin")
        say(f"Built in {seconds / 60:.1f} minutes: {home / 'bin'}")
        return {**info, "bin": str(home / "bin")}


# ------------------------------------------------------------------------------------------------- CLI


def status() -> dict:
    return {"cache": str(cache_dir()),
            "downloads": {e: str(downloaded(e) or "missing") for e in ENGINES},
            "llama.cpp binaries": {t: str(llama_cpp_binary(t) or "missing") for t in LLAMA_CPP_TARGETS}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.engine_sources", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("status", "fetch", "build", "prepare"))
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: every core)")
    args = parser.parse_args(argv)
    try:
        if args.action in ("fetch", "prepare"):
            for engine in ENGINES:
                print(f"{engine} {ENGINES[engine].version}: {fetch(engine)}")
        if args.action in ("build", "prepare"):
            built = build_llama_cpp(args.jobs)
            if not built["built"]:
                print(f"llama.cpp: {', '.join(LLAMA_CPP_TARGETS)} already built in {built['bin']}")
    except CourseError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    if args.action == "status":
        print(json.dumps(status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
