"""sweeper: adversarial-robustness architecture sweeps on Ray Tune."""

__version__ = "0.1.0"
