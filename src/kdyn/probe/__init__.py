"""The probe scorer: one model, a benchmark's probes → one row of results per probe."""

from kdyn.probe.scorer import ScoreConfig, score_probes

__all__ = ["ScoreConfig", "score_probes"]
