"""The native-speaker validation loop: sample a run's answers, label them in a browser, import.

``xsafety annotate export RUN_DIR`` draws a seeded sample per locale, stratified by the primary
judge's label and the prompt category (``sample.py``), and writes it as one self-contained offline
HTML page (``page.py``) and as CSV. ``xsafety annotate import FILE --run-dir RUN_DIR`` stores the
labels append-only with annotator id and time (``labels.py``); the report then states, per
locale, how well the judge agrees with them (``xsafety.report.validity``) and corrects its rates
(``xsafety.report.correct``). Two annotators on the same items give Cohen's kappa per locale.
"""

from xsafety.annotate.labels import (
    HUMAN_LABELS,
    agreement,
    import_labels,
    read_labels,
    run_calibration,
)
from xsafety.annotate.sample import ANNOTATION_DIR, SampleItem, draw_sample, export_sample

__all__ = [
    "ANNOTATION_DIR",
    "HUMAN_LABELS",
    "SampleItem",
    "agreement",
    "draw_sample",
    "export_sample",
    "import_labels",
    "read_labels",
    "run_calibration",
]
