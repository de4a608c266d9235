"""A full disk or a folder that cannot be written: a message that says which file and what
to do, exit status 1, and nothing already written lost (every record is written to a
temporary file and renamed into place)."""

from __future__ import annotations

import errno
import os
import types

from hyarch import runs
from hyarch.cli import main
from tests.review_fixtures import demo_copy


def test_a_full_disk_is_a_message_and_loses_nothing(tmp_path_factory, monkeypatch, capsys):
    run = demo_copy(tmp_path_factory, "full")
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}

    def write(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "os", types.SimpleNamespace(**{**vars(os), "write": write}))
    code = main(["report", str(run.path)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "cannot write" in err and "report.html: the disk is full" in err, err
    assert "Traceback" not in err and "--resume" in err
    monkeypatch.undo()
    after = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    assert after == before  # no torn file, no leftover temporary file


def test_other_os_errors_still_show_their_traceback(tmp_path_factory, monkeypatch):
    import pytest

    run = demo_copy(tmp_path_factory, "other")

    def write(fd, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(runs, "os", types.SimpleNamespace(**{**vars(os), "write": write}))
    with pytest.raises(OSError, match="Input/output error"):
        main(["report", str(run.path)])
