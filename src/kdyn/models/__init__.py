"""Model registry: short names for the embedded CPU models, plus any HF id or local folder."""

from kdyn.models.registry import MODELS, LoadedModel, ModelSpec, list_models, load_model, resolve_model

__all__ = ["MODELS", "LoadedModel", "ModelSpec", "list_models", "load_model", "resolve_model"]
