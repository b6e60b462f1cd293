from vidcli.decompose.run import DecomposeOptions, decompose_batch

__all__ = ["DecomposeOptions", "decompose_batch"]
