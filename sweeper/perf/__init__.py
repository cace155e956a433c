"""Performance: how fast sweeper trains and evaluates, and what a sweep will cost.

    timing.py      step timing shared by `sweeper calibrate` and bench/ (one loop, one clock)
    calibrate.py   `sweeper calibrate`: throughput per GPU kind, GPU-hours estimates
"""
