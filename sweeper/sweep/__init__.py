"""Running a search space on Ray Tune.

    plan.py       Plan / RunOptions / make_plan: what is left to run (no Ray)
    runner.py     run_sweep: the Tune trainable around sweeper.trial.run_trial
    workers.py    run_on_workers: one trial on N Ray Train workers (TorchTrainer, DDP)
    admission.py  which trial starts next when trial sizes mix (no big trial starves)
    search.py     Optuna search over a space's sample params, warm-started from rows
    progress.py   the live view (a Tune callback)
    preflight.py  before the first trial: the data is there, the cluster can hold a trial
    signals.py    SIGTERM (scancel, time limits) handled as Ctrl+C; exit 143

Every Ray import of the package lives in this sub-package; imports run
workers -> admission -> runner and plan -> search/progress -> runner, never back.
"""
