"""Training dynamics: what updates do to other answers, layer by layer, and held-out-task loss through training."""
