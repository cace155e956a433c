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
# Ray Train's controller collects a report from its workers every 2 s, and a worker's second
# report waits for the first to be collected: epochs of the tests' tiny trials (0.15 s) took
# 2 s each on two workers (measured). Real epochs take longer than 2 s and never wait.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Ray starts its workers (every trial) at nice 15, so that its own servers stay responsive.
# Beside two CPU burners at nice 0 such a worker gets about 2% of a core: a test of six
# trials that takes 14 s on a quiet machine ran past 10 minutes (measured; 26 s at nice 0).
# The suite must pass on a loaded machine, not on one that starves the code under test.
os.environ.setdefault("RAY_worker_niceness", "0")


# fixtures that start Ray: a test using one (autouse ones included) is a Ray test
RAY_FIXTURES = {"ray_instance", "local_ray", "cluster"}
# tests that start Ray in a subprocess (`sweeper run`, `ray start`) or start and stop it within
# the test: a whole file, a test, or a prefix of tests ("file::test_prefix")
RAY_TESTS = {
    "test_run_cli.py",
    "test_storage.py::test_a_node_that_does_not_see_the_results_store_is_one_error",
    "test_storage_faults.py::test_a_trial_on_a_full_disk_stops_the_run_without_retries",
    "test_transfer.py::test_a_cpu_digits_study_then_transfer",
}
# long ones: over ~1.5 s, measured with --durations on the 2-core machine under load
# (2026-12-06): training to a quality bar, whole studies' dry runs, wheels, benchmarks,
# notebooks, subprocesses of the CLI. The quick lane (`-m "not ray and not slow"`) is what
# is left: under 2 minutes.
SLOW_TESTS = {
    "test_adaptive.py::test_surrogate_ranks_and_concludes",
    "test_adaptive.py::test_adaptive_order_reaches_the_planted_best_early",
    "test_analysis.py::test_demo_without_training",
    "test_analysis.py::test_report",
    "test_analysis_folder.py",
    "test_attacks.py::test_autoattack",
    "test_attacks.py::test_pgd_and_cw_drive_accuracy_far_below_clean",
    "test_attacks.py::test_trades_adversary_moves_the_prediction",
    "test_bench.py",
    "test_bounds.py::test_a_huge_depth_is_refused_within_4_gb",
    "test_bounds.py::test_epochs_1e9_is_refused_before_torch_is_imported",
    "test_bounds.py::test_an_axis_lists_at_most_max_cells_values",
    "test_bounds.py::test_an_alias_bomb_in_a_zip_axis_is_refused_before_expansion",
    "test_calibrate.py::test_quick_calibration_round_trips",
    "test_calibrate.py::test_a_trials_cost_is_counted_at_its_data_image_size",
    "test_channel_mixing.py",
    "test_demo.py",
    "test_export_program.py",
    "test_fidelity.py::test_kendall_interval_covers_the_planted_tau",
    "test_fidelity.py::test_report_has_a_fidelity_section_for_sweeps_of_one_study",
    "test_fidelity.py::test_fidelity_of_real_trials",
    "test_fidelity.py::test_cli_json_table_plot_and_errors",
    "test_install.py::test_the_wheel_runs_the_packaged_studies_from_an_empty_directory",
    "test_models.py::test_match_width_lands_on_target",
    "test_models.py::test_macs_tally_matches_whole_model",
    "test_models.py::test_robust_block_defaults_are_the_papers",
    "test_power.py::test_seed_spread_is_read_from_earlier_rows",
    "test_preflight.py::test_a_gpu_per_trial_where_ray_sees_no_gpu_is_one_line_and_exit_2",
    "test_preflight.py::test_a_cifar_study_without_cifar_is_one_line_and_exit_2_with_no_rows",
    "test_presets.py",
    "test_reference.py::test_conv_type_bottlenecks_keep_their_middle_width",
    "test_scaling.py::test_pathological_metrics_are_clear_errors",
    "test_scaling.py::test_cli_json_plot_and_errors",
    "test_scaling.py::test_noise_without_curvature_claims_no_optimum",
    "test_space_fuzz.py::test_mutated_smoke",
    "test_space_fuzz.py::test_mutated_documents[robustresnets]",
    "test_storage_faults.py::test_real_read_only_store_run_and_eval_are_one_line_exit_2",
    "test_store.py",
    "test_studies.py::test_kernel_cells_differ_in_the_kernel_alone",
    "test_studies.py::test_at_methods_crosses_methods_with_networks",
    "test_subsample.py::test_cli_dry_run_and_errors",
    "test_threats.py",
    "test_training.py::test_adversarial_training_beats_clean_under_pgd",
    "test_transfer.py::test_transfer_reports_tau_with_ci_the_plot_and_the_sign_changes",
    "test_transfer.py::test_report_has_a_threat_model_section",
    "test_trial.py::test_digits_trains_a_robust_model_in_a_minute",
    "test_trial.py::test_ok_row_has_every_column",
    "test_trial.py::test_interrupted_trial_resumes_to_the_same_metrics",
    "test_trial.py::test_cli_trial",
    "test_trial.py::test_best_checkpoint_and_stop_epoch_reach_the_row",
    "test_workers.py::test_sharded_evaluation_counts_every_point_once",
}


def _matches(item: pytest.Item, entries: set[str]) -> bool:
    """A file's name, or "file::test" where test is a prefix of the test's name."""
    name = item.path.name
    if name in entries:
        return True
    return any(e.startswith(f"{name}::") and f"{name}::{item.name}".startswith(e)
               for e in entries)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) or _matches(item, RAY_TESTS):
            item.add_marker(pytest.mark.ray)
        if _matches(item, SLOW_TESTS):
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
