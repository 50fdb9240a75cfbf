"""Running `scripts/train_lora.py` on more than one process: the `accelerate launch` command for a GPU node, and a
real rehearsal of data parallelism on this machine's CPU (2 processes talking over gloo).

    print(launch_command(8, "/data/grok-2-converted", settings=LoraSettings(rank=16, alpha=32)))
    report = rehearse_on_cpu(processes=2, steps=4)     # the script's JSON report, plus "command" and "output"

The rehearsal runs in its own process group inside a temporary folder of the workspace: a timeout, an error or an
interrupt ends every process it started, and the folder (checkpoints, adapter) is removed afterwards - it holds only
what the rehearsal wrote.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import CourseError
from ..paths import REPO_ROOT, workspace_dir
from .adapters import LoraSettings

SCRIPT = "scripts/train_lora.py"
CONFIGS = "configs/accelerate"


def launch_command(gpus: int, model: str, *, strategy: str = "fsdp", quantization: str | None = "nf4",
                   settings: LoraSettings = LoraSettings(rank=16, alpha=32), extra: str = "") -> str:
    """The command that runs scripts/train_lora.py on `gpus` GPUs of one node."""
    args = (f"{SCRIPT} --model {model} --rank {settings.rank} --alpha {settings.alpha:g} "
            f"--parts {','.join(settings.parts)}" + (f" --quantization {quantization}" if quantization else "")
            + " --gradient-checkpointing" + (f" {extra}" if extra else ""))
    if strategy == "device_map":
        return f"python {args} --device-map auto"
    config = f"{CONFIGS}/fsdp_qlora.yaml" if quantization else f"{CONFIGS}/fsdp.yaml"
    if strategy == "ddp":
        config = f"{CONFIGS}/ddp.yaml"
    return f"accelerate launch --config_file {config} --num_processes {gpus} {args}"


def cpu_rehearsal_args(processes: int, steps: int, batch_size: int, folder: Path) -> list[str]:
    """`accelerate launch` arguments for a DDP run on CPU processes. `accelerate launch --cpu` would start a single
    process (several CPU processes need MPI there), so the rehearsal uses the torchrun launcher of ddp.yaml and
    passes `--cpu` to the script instead."""
    return ["--config_file", f"{CONFIGS}/ddp.yaml", "--num_processes", str(processes), SCRIPT, "--cpu",
            "--threads", "1", "--steps", str(steps), "--batch-size", str(batch_size),
            "--eval-every", str(max(1, steps // 2)), "--save-every", str(max(1, steps // 2)),
            "--checkpoint-dir", str(folder / "checkpoints"), "--output", str(folder / "adapter"),
            "--report", str(folder / "report.json")]


def _end_group(process: subprocess.Popen) -> None:
    """SIGTERM to the whole process group, SIGKILL to what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def rehearse_on_cpu(processes: int = 2, steps: int = 4, batch_size: int = 4, timeout: float = 600) -> dict:
    """Run scripts/train_lora.py under `accelerate launch` on `processes` CPU processes (DDP over gloo) with the
    active profile's model, and return the script's report with "command" (as you would type it) and "output" (its
    printed lines, progress bars left out; "..." stands for the temporary folder, gone by then). Raises CourseError,
    with the end of the script's errors, if it fails."""
    with tempfile.TemporaryDirectory(prefix="lora-rehearsal-", dir=workspace_dir()) as tmp:
        folder = Path(tmp)
        args = cpu_rehearsal_args(processes, steps, batch_size, folder)
        command = [sys.executable, "-m", "accelerate.commands.launch", *args]
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # its own group: one signal ends every process it starts
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(process)
            raise CourseError(f"The {processes}-process rehearsal did not finish within {timeout:.0f} s (stopped).",
                              "Run it when the machine is less busy, or pass a larger timeout=.") from None
        except BaseException:
            _end_group(process)
            raise
        if process.returncode != 0:
            raise CourseError(f"The rehearsal exited with status {process.returncode}:\n{err[-3000:]}",
                              "Read the error above; `python scripts/train_lora.py --cpu --steps 2` shows the same "
                              "problem in one process.")
        report = json.loads((folder / "report.json").read_text())
    shown = [a if not a.startswith(tmp) else "..." + a[len(tmp):] for a in args]
    report["command"] = "accelerate launch " + shlex.join(shown)
    report["output"] = [line.replace(tmp, "...") for line in out.splitlines() if "%|" not in line]
    return report


__all__ = ["launch_command", "cpu_rehearsal_args", "rehearse_on_cpu"]
