"""`mgral pretrain` end to end on tiny data: the flow writes a transfer file whose provenance matches it."""

import json

import pytest
from typer.testing import CliRunner

import flows.pretrain  # noqa: F401  (imported here so that Prefect binds its log handler outside CliRunner)
from mgral_cli.main import app
from mgral_workspace.provenance import sha256_of
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_mgral_pretrain_writes_weights_and_provenance_and_a_cycle_can_start_from_them(tmp_path, prefect_harness):
    params = write_params(tmp_path / "params.yaml", pretrain__images=10, pretrain__val_images=2, pretrain__epochs=1,
                          pretrain__batch=4, pretrain__seed=3)
    result = CliRunner().invoke(app, ["pretrain", str(tmp_path / "work"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    weights = tmp_path / "work" / "transfer.pt"
    record = json.loads(weights.with_suffix(".json").read_text())
    assert record["sha256"] == sha256_of(weights) and record["generator"]["seed"] == 3
    assert record["generator"]["n_train"] == 10 and record["command"].startswith("mgral pretrain")
    assert record["machine"]["nproc"] >= 1 and record["versions"]["torch"]
    trained = tmp_path / "work" / "train" / "trained.json"
    before = (trained.stat().st_mtime_ns, (tmp_path / "work" / "data" / "spec.json").stat().st_mtime_ns)
    again = CliRunner().invoke(app, ["pretrain", str(tmp_path / "work"), "--params", str(params)])
    assert again.exit_code == 0, again.output  # a finished run and its set are reused, not made again
    assert (trained.stat().st_mtime_ns, (tmp_path / "work" / "data" / "spec.json").stat().st_mtime_ns) == before
    other = write_params(tmp_path / "other.yaml", pretrain__images=11, pretrain__val_images=2, pretrain__epochs=1)
    refused = CliRunner().invoke(app, ["pretrain", str(tmp_path / "work"), "--params", str(other)])
    assert refused.exit_code == 2 and "error:" in refused.output and "spec.json" in refused.output
