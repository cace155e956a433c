"""Analysis of sweep results with pandas and matplotlib, usable from a notebook:

    from sweeper.analysis import load, variant_table, write_report
    rows = load("results")                        # every sweep under results/
    variant_table(rows[rows["sweep"] == "se"])    # means, 95% CIs, deltas from baseline
    write_report(rows, "report/")                 # report.md + PNGs

    from sweeper.analysis.scaling import fit_scaling       # the RobustScaling refit
    from sweeper.analysis.plots import scaling_figure
    scaling_figure(fit_scaling(rows[rows["sweep"] == "compound"]))

`analysis.synthetic` makes fake rows for tests and demos; they are never results.
"""

from sweeper.analysis.report import write_report
from sweeper.analysis.tables import load, percent_view, study_factors, summarize, variant_table

__all__ = ["load", "percent_view", "study_factors", "summarize", "variant_table", "write_report"]
