"""Shared helpers of the training script: errors, config, losses, I/O."""
