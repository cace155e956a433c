"""Study economics: what a cheaper study can tell about the full one.

    match.py       the same network at two fidelities (identity minus the fidelity keys)
    subsample.py   `run --subsample K --from CHEAP`: K cells of a cheap sweep, stratified
    surrogate.py   a Gaussian-process surrogate of a metric over architecture cells
    adaptive.py    `run --order adaptive`: which cell to run next (the Tune Searcher that
                   wraps it is sweeper.sweep.adaptive_search, beside the other Ray code)

No Ray, and no analysis: scheduling (sweeper.sweep) uses the order and the matching, and
`sweeper fidelity` (sweeper.analysis.fidelity, the judging of two finished sweeps) builds
on them.
"""
