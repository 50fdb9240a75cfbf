"""Fine-tuning, used carelessly: nothing the course did not write is deleted (adapter folders, the workspace), two
runs never share a checkpoint folder, a kill mid-save is recovered on the next call, and odd data files (Unicode
line separators, Latin-1, UTF-16, a folder, deep nesting, a huge line or file) each get a message naming the line and
the fix, before any work proportional to their size. Issue 18, items 1, 2, 4, 19 and 20; rows of tests/bad_inputs.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

import helpers
from helpers import finetune
from helpers.finetune import folders
from helpers.paths import DATA_DIR, REPO_ROOT
from helpers.units import GB, MiB

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROW = {"messages": [{"role": "user", "content": "Combien de couches ?"}, {"role": "assistant", "content": "64."}]}


@pytest.fixture(scope="module")
def lora_model():
    """A tiny Grok 2 with fresh (untrained) LoRA adapters: enough to save and load."""
    return finetune.apply_lora(helpers.load_model(verbose=False), finetune.LoraSettings(rank=2, dropout=0.0))


@pytest.fixture(scope="module")
def examples(tokenizer):
    rows = finetune.load_chat_jsonl(DATA_DIR / "finetune" / "faq_fr_train.jsonl")[:16]
    return finetune.encode_dataset(tokenizer, rows, max_len=128)


def dead_pid() -> int:
    """The id of a process that has ended (what a killed writer leaves in its folders' names)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------- item 1: never delete others' files


def test_save_adapter_refuses_a_folder_holding_other_files(tmp_path, lora_model, monkeypatch):
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.md").write_text("three weeks of notes")
    with pytest.raises(helpers.CourseError, match="notes.md") as refused:
        finetune.save_adapter(lora_model, mine)
    assert "would delete them" in str(refused.value) and "Fix: Save into a new folder" in str(refused.value)
    assert snapshot(mine) == {"notes.md": b"three weeks of notes"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-project"]  # no temporary folder left beside it

    monkeypatch.setenv("GROK2_COURSE_WORKSPACE", str(mine))  # save_adapter(model, workspace_dir()) wiped it once
    with pytest.raises(helpers.CourseError, match="save_adapter did not write"):
        finetune.save_adapter(lora_model, helpers.workspace_dir())
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(helpers.CourseError, match="is a file"):
        finetune.save_adapter(lora_model, tmp_path / "a-file")


def test_save_adapter_replaces_only_an_adapter_it_wrote(tmp_path, lora_model):
    target = tmp_path / "adapter"
    first = finetune.save_adapter(lora_model, target)
    assert {"adapter_config.json", "adapter_model.safetensors", finetune.ADAPTER_RECORD} <= set(first["files"])
    again = finetune.save_adapter(lora_model, target)  # its own earlier adapter: replaced, atomically
    assert again["files"] == first["files"]
    (target / "notes.md").write_text("mine")
    with pytest.raises(helpers.CourseError, match="notes.md"):
        finetune.save_adapter(lora_model, target)
    assert (target / "notes.md").read_text() == "mine"
    # an adapter folder written by something else (PEFT directly, a download) has no record: refused too
    (target / "notes.md").unlink()
    (target / finetune.ADAPTER_RECORD).unlink()
    with pytest.raises(helpers.CourseError, match="adapter_model.safetensors"):
        finetune.save_adapter(lora_model, target)


# ----------------------------------------------------------------------------------- item 4: kills in mid-save


def test_an_adapter_save_killed_between_its_renames_is_finished_on_the_next_call(tmp_path, lora_model, monkeypatch,
                                                                                   capsys):
    target = tmp_path / "adapter"
    finetune.save_adapter(lora_model, target)
    expected = snapshot(target)
    real_replace = os.replace

    class Killed(BaseException):  # what SIGKILL does to this process: nothing after it runs, no clean-up
        pass

    def replace(src, dst):
        real_replace(src, dst)
        if Path(dst).name.startswith(".adapter.old-"):
            raise Killed

    monkeypatch.setattr(folders.os, "replace", replace)
    with pytest.raises(Killed):
        finetune.save_adapter(lora_model, target)
    monkeypatch.setattr(folders.os, "replace", real_replace)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "adapter" not in left and any(".adapter.new-" in n for n in left) and any(".adapter.old-" in n for n in left)

    reloaded = finetune.load_adapter(helpers.load_model(verbose=False), target)  # the next call, of either kind
    assert "load_adapter: finished an interrupted save" in capsys.readouterr().out
    assert reloaded is not None and snapshot(target) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # the old copy is gone, nothing half-written


def test_half_written_checkpoints_of_a_killed_run_are_removed_and_said(tmp_path, lora_model, examples, capsys):
    folder = tmp_path / "checkpoints"
    killed = folder / f".checkpoint-000002.tmp-{dead_pid()}-x1y2"
    killed.mkdir(parents=True)
    (killed / "adapter.safetensors").write_bytes(b"half")
    busy = folder / f".checkpoint-000004.tmp-{os.getppid()}-z3"  # a live process's: it may be writing it right now
    busy.mkdir()
    settings = finetune.TrainSettings(steps=1, batch_size=2, eval_every=0, save_every=1)
    result = finetune.train(lora_model, examples, settings, checkpoint_dir=folder, progress=False)
    assert "train: removed .checkpoint-000002.tmp-" in capsys.readouterr().out
    assert any("half-written" in note for note in result.notes)
    assert not killed.exists() and busy.exists()
    assert [p.name for p in finetune.list_checkpoints(folder)] == ["checkpoint-000001"]
    assert result.checkpoint == folder / "checkpoint-000001"


def test_a_leftover_whose_writer_id_now_belongs_to_another_process_is_recovered(tmp_path):
    """Process ids are reused: a leftover is in progress only if its writer's id AND start time match a live process."""
    live = os.getppid()  # alive, and not the writer of the first leftover: the start time recorded there differs
    start = folders._start_time(live)
    assert start is not None and folders._writer() == f"{os.getpid()}@{folders._start_time(os.getpid())}"
    orphan = tmp_path / f".adapter.new-{live}@{int(start) + 1}"
    orphan.mkdir()
    (orphan / "adapter_model.safetensors").write_bytes(b"complete")
    busy = tmp_path / f".adapter.tmp-{live}@{start}-x1y2"  # that very process's: it may be writing it right now
    busy.mkdir()
    notes = folders.recover_interrupted_writes(tmp_path, "adapter")
    assert any("finished an interrupted save" in note for note in notes) and not orphan.exists()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == b"complete" and busy.exists()


# --------------------------------------------------------------------------- item 2: one run per checkpoint folder


def test_a_fresh_run_into_an_earlier_runs_folder_is_refused_then_set_aside(tmp_path, lora_model, examples):
    folder = tmp_path / "run"
    settings = finetune.TrainSettings(steps=2, batch_size=2, eval_every=0, save_every=1)
    finetune.train(lora_model, examples, settings, checkpoint_dir=folder, progress=False)
    earlier = snapshot(folder)
    other = finetune.TrainSettings(steps=3, batch_size=2, eval_every=0, save_every=1, seed=1)
    with pytest.raises(helpers.CourseError, match="earlier run") as refused:
        finetune.train(lora_model, examples, other, checkpoint_dir=folder, resume=False, progress=False)
    message = str(refused.value)
    assert str(folder) in message and "resume=True" in message and "set_aside_run" in message
    assert snapshot(folder) == earlier  # untouched

    moved = finetune.set_aside_run(folder)
    assert moved == tmp_path / "run.earlier-1" and snapshot(moved) == earlier
    fresh = finetune.train(lora_model, examples, other, checkpoint_dir=folder, resume=False, progress=False)
    assert fresh.checkpoint == folder / "checkpoint-000003" and fresh.resumed_from is None
    state = json.loads((fresh.checkpoint / "state.json").read_text())
    assert state["schedule"] == other.schedule() and state["history"] == fresh.history  # this run's, not the earlier
    assert finetune.set_aside_run(tmp_path / "never-used") is None


def test_the_script_checks_its_folders_before_loading_anything(tmp_path, repo_script):
    script = repo_script("train_lora")

    class OneProcess:
        is_main_process = True

        def wait_for_everyone(self):
            pass

    output, checkpoints = tmp_path / "out", tmp_path / "ck"
    output.mkdir()
    (output / "notes.md").write_text("mine")
    args = Namespace(no_resume=False, set_aside=False)
    with pytest.raises(helpers.CourseError, match="notes.md"):
        script.check_folders(args, OneProcess(), output, checkpoints)
    (output / "notes.md").unlink()
    (checkpoints / "checkpoint-000002").mkdir(parents=True)
    (checkpoints / "checkpoint-000002" / "state.json").write_text("{}")
    with pytest.raises(helpers.CourseError, match="--set-aside"):
        script.check_folders(Namespace(no_resume=True, set_aside=False), OneProcess(), output, checkpoints)
    script.check_folders(Namespace(no_resume=True, set_aside=True), OneProcess(), output, checkpoints)
    assert (tmp_path / "ck.earlier-1" / "checkpoint-000002" / "state.json").exists()


def test_the_script_refuses_int8_under_fsdp_before_loading_anything(repo_script):
    """FSDP shards only 4-bit quantized weights (packed in bf16); int8 used to be dropped silently there."""
    from accelerate.utils import DistributedType

    script = repo_script("train_lora")
    args = script.parse_args(["--quantization", "int8", "--model", "/nonexistent/model"])
    with pytest.raises(helpers.CourseError, match="int8 cannot be trained under FSDP") as refused:
        script.load_base(args, Namespace(distributed_type=DistributedType.FSDP))
    assert "--quantization nf4" in refused.value.fix


def test_the_script_refuses_an_output_folder_with_other_files_and_says_so_without_a_traceback(tmp_path):
    output = tmp_path / "workspace-like"
    output.mkdir()
    (output / "notes.md").write_text("mine")
    env = dict(os.environ, GROK2_COURSE_WORKSPACE=str(tmp_path), HF_HUB_OFFLINE="1", GROK2_COURSE_PROFILE="tiny")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "train_lora.py"), "--cpu", "--steps", "1",
                           "--output", str(output)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "holds files that save_adapter did not write" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workspace-like"]  # nothing trained, nothing written
    assert (output / "notes.md").read_text() == "mine"


# --------------------------------------------------------------------------------------- items 19 and 20: data


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


def test_rows_holding_unicode_line_separators_load_and_keep_true_line_numbers(tmp_path):
    odd = {"messages": [{"role": "user", "content": "Une ligne\u2028une autre\u0085et\u2029fin ?"},
                        {"role": "assistant", "content": "Oui."}]}
    good = write_lines(tmp_path / "good.jsonl", [json.dumps(odd, ensure_ascii=False), json.dumps(ROW)])
    rows = finetune.load_chat_jsonl(good)
    assert len(rows) == 2 and rows[0][0]["content"] == odd["messages"][0]["content"]
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps(odd, ensure_ascii=False), json.dumps(ROW), "{oops"])
    with pytest.raises(finetune.DataError) as caught:
        finetune.load_chat_jsonl(bad)
    assert [p.split(":")[0] for p in caught.value.problems] == ["line 3"]
    text = json.dumps(odd, ensure_ascii=False) + "\n" + json.dumps(ROW) + "\n"
    assert len(finetune.validate_chat_rows(text)) == 2  # one JSONL string: split on "\n" only as well


def test_latin1_and_utf16_files_name_the_line_and_how_to_re_save_them(tmp_path):
    latin = tmp_path / "latin1.jsonl"
    accented = dict(ROW, messages=[{"role": "user", "content": "Qu'est-ce qu'un modèle ?"}, ROW["messages"][1]])
    write_lines(latin, [json.dumps(ROW), json.dumps(accented, ensure_ascii=False)], encoding="latin-1")
    with pytest.raises(finetune.DataError) as caught:
        finetune.load_chat_jsonl(latin)
    assert caught.value.problems[0].startswith("line 2: byte ") and "Latin-1" in caught.value.problems[0]
    assert "Save the file as UTF-8" in caught.value.fix and "iconv" in caught.value.fix
    for encoding in ("utf-16", "utf-16-le"):  # with and without a byte-order mark
        path = write_lines(tmp_path / f"{encoding}.jsonl", [json.dumps(ROW)], encoding=encoding)
        with pytest.raises(finetune.DataError, match="line 1: the file is UTF-16") as caught:
            finetune.load_chat_jsonl(path)
        assert "-f utf-16" in caught.value.fix
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\n")  # UTF-8 with a BOM: just UTF-8
    assert len(finetune.load_chat_jsonl(bom)) == 1


def test_a_folder_deep_nesting_and_huge_numbers_get_a_message_naming_the_fix(tmp_path):
    folder = tmp_path / "sets"
    folder.mkdir()
    write_lines(folder / "train.jsonl", [json.dumps(ROW)])
    with pytest.raises(helpers.CourseError, match="is a folder") as caught:
        finetune.load_chat_jsonl(folder)
    assert "train.jsonl" in caught.value.fix
    nested = write_lines(tmp_path / "nested.jsonl", [json.dumps(ROW), "[" * 100_000 + "]" * 100_000,
                                                     '{"messages": ' + "9" * 5000 + "}"])
    with pytest.raises(finetune.DataError) as caught:
        finetune.load_chat_jsonl(nested)
    assert caught.value.problems[0].startswith("line 2: JSON nested too deeply")
    assert caught.value.problems[1].startswith("line 3: not valid JSON")
    with pytest.raises(finetune.DataError, match="expected a line of text"):
        finetune.validate_chat_rows([json.dumps(ROW), ROW])


def test_a_lone_surrogate_is_named_with_its_line_before_any_tokenizing(tmp_path, tokenizer):
    """JSON may escape half of a surrogate pair alone ("\\ud800"); the tokenizer then failed in encode_dataset with a
    TypeError naming no row."""
    lone = '{"messages": [{"role": "user", "content": "Bonjour \\ud800 !"}, {"role": "assistant", "content": "Oui."}]}'
    pair = '{"messages": [{"role": "user", "content": "Emoji \\ud83d\\ude00 ?"}, {"role": "assistant", "content": "Oui."}]}'
    path = write_lines(tmp_path / "surrogate.jsonl", [json.dumps(ROW), lone, pair])
    with pytest.raises(finetune.DataError) as caught:
        finetune.load_chat_jsonl(path)
    assert caught.value.problems == ['line 2: message 0 (user) holds in "content" a lone surrogate (\\ud800 at '
                                     "character 8), half of a UTF-16 pair without its other half, which is not text: "
                                     "write the character itself, or both halves of its pair"]
    assert len(finetune.validate_chat_rows([json.dumps(ROW), pair])) == 2  # a real pair is text
    built = [[{"role": "user", "content": "a\udfff"}, {"role": "assistant", "content": "b"}]]  # rows made in code
    with pytest.raises(finetune.DataError, match=r"line 1: message 0 \(user\) holds in \"content\" a lone surrogate"):
        finetune.encode_dataset(tokenizer, built, max_len=128)


def test_a_huge_line_or_file_is_refused_before_it_is_read(tmp_path):
    long_line = tmp_path / "long.jsonl"
    with long_line.open("wb") as handle:
        handle.write(json.dumps(ROW).encode() + b"\n")
        handle.write(b'{"messages": "' + b"a" * (3 * MiB) + b'"}\n')
        handle.write(b"{not json\n")  # after the long line: not read at all
    started = time.perf_counter()
    with pytest.raises(finetune.DataError) as caught:
        finetune.load_chat_jsonl(long_line)
    assert caught.value.problems == [caught.value.problems[0]] and "line 2: longer than 1.0 MB (no row" in str(caught.value)
    assert "stopped reading here" in caught.value.problems[0] and time.perf_counter() - started < 2
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as handle:
        handle.truncate(5 * GB)  # a sparse 5 GB file: no disk used, and it must not be read
    started = time.perf_counter()
    with pytest.raises(helpers.CourseError, match=r"is 5\.0 GB.*more than load_chat_jsonl reads"):
        finetune.load_chat_jsonl(huge)
    assert time.perf_counter() - started < 1


# ---------------------------------------------------------------------------- the CPU rehearsal leaves nothing


def test_a_rehearsal_that_runs_out_of_time_ends_every_process_it_started(tmp_path, monkeypatch):
    import psutil

    monkeypatch.setenv("GROK2_COURSE_WORKSPACE", str(tmp_path))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(helpers.CourseError, match="did not finish within 1 s"):
        finetune.rehearse_on_cpu(processes=2, steps=2, timeout=1)
    time.sleep(0.5)
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, left
    strays = [p.pid for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not strays and not list(tmp_path.iterdir())  # its temporary folder is gone too
