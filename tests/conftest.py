"""Test-wide settings.

Ray start-up: Ray waits 30 s by default for the GCS to publish its port; a loaded machine
(another CPU-heavy job beside the suite) can need longer. Subprocesses inherit the setting.

One torch thread: on a shared 2-core machine two OpenMP threads spin-waiting on each other
made tiny-model training about 12x slower (40 s vs 3.4 s, measured); tiny models gain
nothing from a second thread anyway.

Lanes: tests that start Ray (an instance, a cluster, or a `sweeper run` subprocess) are
marked `ray`, long ones `slow`, here rather than in each file, so that
`pytest -m "not ray and not slow"` is the quick lane run on every edit. A test that starts
Ray in this process without the mark fails, so the list cannot silently go stale.
"""

import os
import sys

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "180")


# fixtures that start Ray: a test using one (autouse ones included) is a Ray test
RAY_FIXTURES = {"ray_instance", "local_ray", "cluster"}
# tests that start Ray in a subprocess (`sweeper run`, `ray start`): whole files or file::test
RAY_TESTS = {
    "test_run_cli.py",
    "test_storage.py::test_a_node_that_does_not_see_the_results_store_is_one_error",
}
# long ones (measured with --durations on a loaded 2-core machine, 2026-12-06): training to
# a quality bar, installing a wheel, benchmarks, a module fixture that trains two trials
SLOW_TESTS = {
    "test_analysis.py::test_demo_without_training",
    "test_bench.py",
    "test_fidelity.py::test_kendall_interval_covers_the_planted_tau",
    "test_store.py",
    "test_install.py::test_the_wheel_runs_the_packaged_studies_from_an_empty_directory",
    "test_training.py::test_adversarial_training_beats_clean_under_pgd",
    "test_trial.py::test_digits_trains_a_robust_model_in_a_minute",
    "test_trial.py::test_ok_row_has_every_column",
    "test_workers.py::test_sharded_evaluation_counts_every_point_once",
}


def _keys(item: pytest.Item) -> set[str]:
    name = item.path.name
    return {name, f"{name}::{getattr(item, 'originalname', item.name)}"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        keys = _keys(item)
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) or keys & RAY_TESTS:
            item.add_marker(pytest.mark.ray)
        if keys & SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def _unmarked_tests_start_no_ray(request: pytest.FixtureRequest):  # noqa: ANN202
    before = _ray_running()
    yield
    if not before and _ray_running() and request.node.get_closest_marker("ray") is None:
        pytest.fail("this test started Ray: add it to RAY_TESTS in tests/conftest.py")
