"""xsafety: measure how much less safe a language model becomes outside English."""

__version__ = "0.1.0"
