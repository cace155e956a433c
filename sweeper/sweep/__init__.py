"""Running a search space on Ray Tune (every Ray import of the package is in here).

    plan.py             Plan / RunOptions / make_plan: what is left to run (no Ray)
    runner.py           run_sweep: the Tune trainable around sweeper.trial.run_trial
    workers.py          run_on_workers: one trial on N Ray Train workers (TorchTrainer, DDP)
    admission.py        which trial starts next when trial sizes mix (no big trial starves)
    search.py           Optuna search over a space's sample params, warm-started from rows
    adaptive_search.py  `--order adaptive` as a Tune Searcher (the rule: economics.adaptive)
    progress.py         the live view (a Tune callback)
    checkpoints.py      a trial's per-epoch checkpoints in the store: restore, set aside, drop
    storage.py          the shared-store check on clusters, trial scratch folders
    preflight.py        before the first trial: the data is there, the cluster can hold a trial
    signals.py          SIGTERM (scancel, time limits) handled as Ctrl+C; exit 143
    trackers.py         MLflow / W&B / TensorBoard through Tune's callbacks (--log)

Below this package: sweeper.economics (adaptive order, matching, subsampling) and the trial;
nothing here imports sweeper.analysis. Within it, imports run workers -> admission -> runner
and plan -> search/progress -> runner, never back.
"""
