"""U2A: Unified Unimodal Adaptation (Reza et al., arXiv 2501.17823).

- :mod:`.config` - ``model.u2a``: mask tokens, the estimator preset and its switches, lambda,
  modality dropout (imported by :mod:`u2a.config`, so it imports nothing heavy)
- :mod:`.model` - :class:`U2AModel`: CLS and mask tokens, estimates, token selection, head
- :mod:`.estimators` - estimate maps and the reachable-floor check
- :mod:`.losses` - task loss + lambda x alignment, per direction
- :mod:`.dropout` - random modality dropout
- :mod:`.method` - :class:`U2AMethod`: statistics before training, parameter groups, the step
"""
