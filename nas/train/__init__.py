"""Supernet training: samplers, losses, BN recalibration, the trainer."""
