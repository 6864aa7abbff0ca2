"""`mgral status` reads the pool summary written by `PoolState.save`, and only while pool.csv is unchanged."""

import subprocess
import sys

from typer.testing import CliRunner

from mgral_cli.main import app
from mgral_workspace.pool import PoolState
from mgral_workspace.pool_summary import SUMMARY_FILE, read_summary


def _status(project) -> str:
    result = CliRunner().invoke(app, ["status", str(project)])
    assert result.exit_code == 0, result.output
    return result.output


def test_status_reads_the_summary_of_the_saved_pool_and_only_that(tiny_project):
    pool = PoolState.load(tiny_project)
    (tiny_project / SUMMARY_FILE).unlink(missing_ok=True)
    assert read_summary(tiny_project) is None
    parsed = _status(tiny_project)  # no summary: pool.csv parsed and checked

    chosen = pool.unlabeled_pool_ids[:3]
    pool.save(tiny_project)
    assert read_summary(tiny_project) == {"version": 1, "digest": read_summary(tiny_project)["digest"],
                                          **PoolState.load(tiny_project).summary()}
    assert _status(tiny_project) == parsed  # same table from the summary

    selected = pool.mark_selected(chosen, 1)
    selected.save(tiny_project)
    shown = _status(tiny_project)
    assert "batch 1: 0/3 labeled" in shown and read_summary(tiny_project)["open_batch"] == {
        "cycle": 1, "labeled": 0, "total": 3}

    # pool.csv changed behind the summary's back (an earlier version checked out, an edit): parsed again
    pool.save(tiny_project)
    (tiny_project / SUMMARY_FILE).write_text((tiny_project / SUMMARY_FILE).read_text())  # summary of `pool`
    text = (tiny_project / "pool.csv").read_text()
    (tiny_project / "pool.csv").write_text(text)
    assert read_summary(tiny_project) is not None  # same bytes: still valid
    selected_text = selected.table.to_csv(index=False)
    (tiny_project / "pool.csv").write_text(selected_text)  # as `dvc checkout` would leave it
    assert read_summary(tiny_project) is None
    assert _status(tiny_project) == shown

    # a broken pool.csv is reported as before, whatever the summary says
    (tiny_project / "pool.csv").write_text(selected_text.replace("False", "maybe", 1))
    broken = CliRunner().invoke(app, ["status", str(tiny_project)])
    assert broken.exit_code == 2 and "'maybe' is not True or False" in broken.output


def test_status_from_the_summary_starts_without_pandas(tiny_project):
    PoolState.load(tiny_project).save(tiny_project)
    code = ("import sys; from typer.testing import CliRunner; from mgral_cli.main import app; "
            f"r = CliRunner().invoke(app, ['status', {str(tiny_project)!r}]); assert r.exit_code == 0, r.output; "
            "print('pandas' in sys.modules, 'numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "False"], done.stdout
