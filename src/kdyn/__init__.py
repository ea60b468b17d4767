"""kdyn: measure what continual pre-training teaches a language model, and what it breaks.

Library first; the `kdyn` CLI is a thin layer over these modules (see README for the file tree).
"""

__version__ = "0.1.0"
