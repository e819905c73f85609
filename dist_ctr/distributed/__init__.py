"""Distributed: DistEnv, sharding plans, fused optimizers, DistributedModelParallel."""
