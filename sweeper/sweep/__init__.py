"""Running a search space on Ray Tune.

    plan.py       Plan / RunOptions / make_plan: what is left to run (no Ray)
    runner.py     run_sweep: the Tune trainable around sweeper.trial.run_trial
    search.py     Optuna search over a space's sample params, warm-started from rows
    progress.py   the live view (a Tune callback)

Every Ray import of the package lives in this sub-package; imports run
plan -> search/progress -> runner, never back.
"""
