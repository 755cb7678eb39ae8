"""Orchestration: what the commands do, built from the library parts.

- :mod:`.train` - :func:`train_run`: datasets, model, Trainer, selection on validation; used by
  ``u2a train``, ``u2a experiment`` and ``u2a demo``
- :mod:`.evaluate` - evaluate trained runs under the missing-modality protocols (``u2a evaluate``)
- :mod:`.experiment` - several methods x seeds on the same splits and tables (``u2a experiment``)
- :mod:`.demo` - the built-in demo (``u2a demo``)
"""
