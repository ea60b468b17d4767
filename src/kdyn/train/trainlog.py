"""train_log.parquet: one row per optimizer step (tokens and seconds are that step's)."""

from __future__ import annotations

import pyarrow as pa

TRAIN_LOG_SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.float64()), ("loss", pa.float64()), ("lr", pa.float64()),
                              ("grad_norm", pa.float64()), ("tokens", pa.int64()), ("seconds", pa.float64())])  # fmt: skip
