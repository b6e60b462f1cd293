"""Trainings that start where a toy-world build ends but are not part of it.

Each runs into a folder of its own under a key of its own (which includes the build's key),
so editing them leaves the cached builds valid; the build's key hashes only the modules
directly in :mod:`vidcli.toyworld`.
"""
