"""report.json, report.md and plots for a run directory (schema: docs/results.md).

curves.py           accuracy curves in report form ({"N": accuracy}); merging them into a report
plots.py            plot helpers (budget curves on a log2 axis, atomic saves); matplotlib is lazy
verifiers.py        report["prm"], report["orm"] and plots/verifiers.png
search.py           report["search"] and plots/search.png
revision.py         report["revision"], plots/revision.png and plots/rl.png
compute_optimal.py  report["compute_optimal"], ["flops_matched"], ["large_model"] and their plots
build.py            build_report (the policy section, then the above), write_report
"""

from ttc_jax.report.build import SCHEMA_VERSION, build_report, write_report
from ttc_jax.report.curves import curve, curve_sets, merge_curves
from ttc_jax.report.verifiers import plot as plot_verifiers

__all__ = [
    "SCHEMA_VERSION",
    "build_report",
    "curve",
    "curve_sets",
    "merge_curves",
    "plot_verifiers",
    "write_report",
]
