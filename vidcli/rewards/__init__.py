"""Rewards shared by the trainers and ``score``: format, coverage, VLM judgements."""
