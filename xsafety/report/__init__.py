"""Cross-lingual safety reports: rates, paired gaps to English, trust, policies, Markdown/HTML.

Public API: ``build_report(run_dir, out_dir=None, policy=None) -> Path`` writes a run's report
folder; ``summary_table(run_dir) -> rich.table.Table`` is the terminal summary;
``compare_runs([run_a, run_b, ...], out_dir) -> Path`` puts runs side by side.
"""

from xsafety.report.build import compute, summary_table
from xsafety.report.folder import build_report, write_report
from xsafety.report.compare import compare_runs
from xsafety.report.policy import load_policy

# Bump when the report's content or layout changes, so finished runs rebuild their report on the
# next `xsafety run` even though no record changed.
REPORT_FORMAT = 3  # 3: item explorer, forest plot, source-category maps

__all__ = ["REPORT_FORMAT", "build_report", "compare_runs", "compute", "load_policy", "summary_table", "write_report"]
