"""Training: activation caches, losses, optimizers and schedules, the LR finder, the phase loop,
checkpoint saving, finalisation (thresholds, test metrics), cross-validation, data parallelism.
"""
