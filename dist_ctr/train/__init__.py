"""Training: task (model + loss), engine, metrics, checkpoints, callbacks, DeepCTR-compatible facade."""
