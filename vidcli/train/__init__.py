"""Trainers: one recipe class per method on small shared helpers.

Each method lives in its own module (``sft``, ``grpo``, ``drf``, ``revise``) as a
complete class with ``setup``, ``train``, ``save_checkpoint`` and ``cleanup`` that reads
top to bottom like the method's section in SPEC.md; no recipe subclasses another. What
they share, each in one place:

- :mod:`~vidcli.train.core`: the run's settings (:class:`~vidcli.train.core.RunConfig`)
  and the conventions every recipe keeps;
- :mod:`~vidcli.train.start`: starting a run (accelerator, resume state, trackers, seeds);
- :mod:`~vidcli.train.optim`: optimiser, schedule, step count, clipping;
- :mod:`~vidcli.train.order`: data order and per-example seeds;
- :mod:`~vidcli.train.inputs`: reading training records and fingerprinting them;
- :mod:`~vidcli.train.steplog`: the per-step JSON-lines log and its trim on resume;
- :mod:`~vidcli.train.checkpoint`: checkpoint folders;
- :mod:`~vidcli.train.monitor`, :mod:`~vidcli.train.tracking`: progress, summary, trackers;
- :mod:`~vidcli.train.interpreter_tuning` (sft, grpo) and
  :mod:`~vidcli.train.dit_tuning` (drf-tune, revise-tune): loading, LoRA and saving of
  the model each pair fine-tunes.
"""
