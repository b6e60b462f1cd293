"""Trainers: one recipe class per method on a small shared core.

:mod:`vidcli.train.core` holds what every recipe needs (accelerate setup, optimiser,
schedule, data order, logging); :mod:`vidcli.train.checkpoint` writes and reads
checkpoint directories. Each method lives in its own module (``sft``, ...) as a class
with ``setup``, ``train``, ``save_checkpoint`` and ``cleanup`` that reads top to bottom
like the method's section in SPEC.md.
"""
