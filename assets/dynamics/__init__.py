"""Learning dynamics: what fine-tuning updates do to other answers, layer by layer (and zero-shot dynamics)."""
