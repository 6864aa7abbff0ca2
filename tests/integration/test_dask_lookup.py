"""The lookup table on a real Dask LocalCluster (two worker processes) equals the local-thread table."""

import shutil

import pytest
from distributed import LocalCluster

from flows.lookup_table import build_lookup_table, lookup_task_runner
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import infer_pool, train_cycle_detector
from mgral_workspace.lookup_store import load_table
from tasks.mgral_tasks import lookup_dir, record_batches

pytestmark = pytest.mark.slow


def test_dask_cluster_matches_local_threads(tiny_project, prefect_harness):
    params = load_params(tiny_project / "params.yaml", {"lookup_table.value": "proxy"})  # records that train
    params = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(update={"records": 4})})
    detector = train_cycle_detector(tiny_project, params, 1)
    inference = infer_pool(tiny_project, detector.weights, params.detector, 1)
    batches = record_batches(str(tiny_project), params, 1, 8)
    args = (str(tiny_project), params, 1, batches, str(detector.weights), str(inference))

    local = build_lookup_table.with_options(task_runner=lookup_task_runner(params))(*args)
    assert all(r["worker"].startswith("local pid") for r in local)
    local_values = {r.record_id: r.value for r in load_table(lookup_dir(str(tiny_project), 1)).records}
    shutil.rmtree(lookup_dir(str(tiny_project), 1))

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        dask_params = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(
            update={"runner": "dask", "dask_address": cluster.scheduler_address})})
        remote = build_lookup_table.with_options(task_runner=lookup_task_runner(dask_params))(*args)
        workers = set(cluster.workers[name].worker_address for name in cluster.workers)
    assert {r["worker"] for r in remote} <= workers and all(r["worker"].startswith("tcp://127.0.0.1:") for r in remote)
    remote_values = {r.record_id: r.value for r in load_table(lookup_dir(str(tiny_project), 1)).records}
    assert remote_values == local_values and len(remote_values) == 4
    # the trained weights themselves are identical (mAP on such tiny data may be 0 everywhere)
    assert [r["weights_digest"] for r in remote] == [r["weights_digest"] for r in local]
    assert len({r["weights_digest"] for r in local}) == 4  # and differ between batches
