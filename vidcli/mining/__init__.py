"""The data pipeline of ReViSE's ``icvg`` triplets (SPEC §7), as a library.

``shots``     shot-boundary detection (PySceneDetect) → clips in seconds
``embed``     clip embeddings from a SigLIP-style image encoder
``pairs``     scene windows, data-driven threshold, sub-clusters, pair scoring, hold-out split
``synthetic`` films with known cuts and recurring scenes, for tests and demos

Nothing heavy is imported here: each module imports its libraries when used.
"""
