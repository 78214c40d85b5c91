"""Zero-shot dynamics (arXiv 2406.11721): held-out-task loss through fine-tuning, per ordering of the training data."""
