"""interp: mechanistic-interpretability suite for subliminal learning on TransformerLens models."""

__version__ = "0.1.0"
