"""Writes and deletions stay inside their folder (docs/security.md): checkpoint clean-up never
follows a symbolic link, and a report (or predictions file) is written through a new temporary
file that mkstemp makes, never through a name a link planted in a shared folder could take."""

import os

from orchestrator.files import write_whole
from orchestrator.runtime.checkpoints import MODEL_FILE, STATE_FILE, drop_checkpoints, drop_weights


def _checkpoint(folder, name):
    ck = folder / name
    ck.mkdir(parents=True)
    (ck / MODEL_FILE).write_text("weights")
    (ck / STATE_FILE).write_text("state")
    return ck


def test_checkpoint_clean_up_follows_no_link(tmp_path):
    from pyarrow import fs as pafs

    outside = _checkpoint(tmp_path, "elsewhere")  # someone's files, outside the trial's folder
    trial = tmp_path / "trial"
    real = _checkpoint(trial, "checkpoint_000000")
    os.symlink(outside, trial / "checkpoint_000001")  # planted: would sort as the newest checkpoint
    local = pafs.LocalFileSystem()
    drop_weights(local, str(trial))
    assert not (real / MODEL_FILE).exists()  # the trial's own weights went
    assert (outside / MODEL_FILE).read_text() == "weights"  # nothing behind the link was touched
    assert drop_checkpoints(local, str(trial)) == 1 and not real.exists()
    assert sorted(p.name for p in outside.iterdir()) == [MODEL_FILE, STATE_FILE]
    os.symlink(outside, tmp_path / "linked-trial")  # a trial folder that is itself a link: left alone
    assert drop_checkpoints(local, str(tmp_path / "linked-trial")) == 0 and (outside / MODEL_FILE).exists()


def test_a_report_is_written_through_no_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "shared"
    out.mkdir()
    os.symlink(victim, out / ".report.md.tmp")  # the temporary name an older mtlo used
    os.symlink(victim, out / "report.md")  # and the report's own name
    write_whole(out / "report.md", "# report\n")
    assert victim.read_text() == "keep me"
    assert not (out / "report.md").is_symlink() and (out / "report.md").read_text() == "# report\n"
    assert oct((out / "report.md").stat().st_mode & 0o777) == "0o644"
    assert not list(out.glob(".report.md.*.tmp"))  # no temporary file left behind
