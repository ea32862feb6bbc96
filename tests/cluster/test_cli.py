"""CLI-wide behaviour of ``nnunet-iph`` (cli.py): bad paths and Ctrl-C are one line, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from nnunet_iph import cli
from tests.conftest import BIN, run_cli


def _one_line_error(proc: subprocess.CompletedProcess, command: str, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"nnunet-iph {command}: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in line, line


def test_not_a_directory_names_the_path(tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = run_cli("nnunet-iph", "phantom", str(tmp_path / "afile" / "cohort"), "-n", "1", "--size", "tiny",
                   check=False)
    _one_line_error(proc, "phantom", str(tmp_path / "afile"), "Not a directory")


def test_is_a_directory_names_the_path(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "plan.json").write_text('{"stages": []}')
    (tmp_path / "grid.csv").mkdir()  # -o names a folder where a file is meant
    proc = run_cli("nnunet-iph", "slurm", "collect", str(tmp_path / "out"), "-o", str(tmp_path / "grid.csv"),
                   check=False)
    _one_line_error(proc, "slurm", str(tmp_path / "grid.csv"), "Is a directory")


def test_other_os_errors_name_the_path(tmp_path):
    target = tmp_path / ("x" * 300) / "cohort"  # ENAMETOOLONG: a plain OSError
    proc = run_cli("nnunet-iph", "phantom", str(target), "-n", "1", "--size", "tiny", check=False)
    _one_line_error(proc, "phantom", str(tmp_path / ("x" * 300)), "File name too long")


def test_permission_error_names_the_path():
    """sysfs refuses new entries even to root (EPERM: a PermissionError)."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys")
    proc = run_cli("nnunet-iph", "phantom", "/sys/nnunet_iph_test/cohort", "-n", "1", "--size", "tiny", check=False)
    _one_line_error(proc, "phantom", "/sys/nnunet_iph_test", "Operation not permitted")


def test_permission_error_in_process(monkeypatch, capsys):
    """The message's form, and two-path errors (rename)."""
    import nnunet_iph.commands.phantom as phantom_cmd

    def denied(out_dir, config):
        raise PermissionError(13, "Permission denied", str(out_dir))

    monkeypatch.setattr(phantom_cmd, "generate_cohort", denied)
    assert cli.main(["phantom", "/data/cohort"]) == 2
    assert capsys.readouterr().err == "nnunet-iph phantom: error: /data/cohort: Permission denied\n"
    assert cli.os_error_message(OSError(18, "Invalid cross-device link", "/a", None, "/b")) == (
        "/a -> /b: Invalid cross-device link")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    proc = run_cli("nnunet-iph", "phantom", str(tmp_path / "ro" / "cohort"), "-n", "1", "--size", "tiny",
                   check=False)
    _one_line_error(proc, "phantom", str(tmp_path / "ro"), "Permission denied")


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_temporary_files(tmp_path):
    out = tmp_path / "cohort"
    proc = subprocess.Popen([str(BIN / "nnunet-iph"), "phantom", str(out), "-n", "400", "--size", "small"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace",
                            # a shell's background jobs inherit SIGINT ignored; a terminal's Ctrl-C does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "masks").is_dir() or not any((out / "masks").iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.rstrip().splitlines()[-1] == "nnunet-iph phantom: interrupted"
    assert not (out / "manifest.csv").exists()  # the cohort is not marked complete
    leftovers = [p.name for p in out.rglob(".*")]
    assert leftovers == [], leftovers  # atomic writes removed their temporary files


def test_broken_pipe_is_quiet():
    """``nnunet-iph trainers | head -1``: the reader is gone before the first write."""
    proc = subprocess.Popen([str(BIN / "nnunet-iph"), "trainers"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.communicate(timeout=120)[1].decode("utf-8", "replace")
    assert proc.returncode == 141 and stderr == "", stderr
