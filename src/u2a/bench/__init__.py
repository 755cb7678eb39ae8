"""``u2a bench``: training and inference speed, memory and FLOP utilisation of a config's model,
each comparison measured side by side in one process (docs/benchmarks.md).

- :mod:`.measure` - interleaved timing, medians, peak memory
- :mod:`.flops` - FLOPs counted (FlopCounterMode) and analytic; the measured matmul peak
- :mod:`.workload` - synthetic inputs, missing-modality scenarios, the two paths
- :mod:`.runner` - the comparisons (:class:`~u2a.bench.runner.Bench`) and their options
- :mod:`.report` - the readable table
"""

from u2a.bench.runner import COMPARISONS, Bench, BenchOptions

__all__ = ["COMPARISONS", "Bench", "BenchOptions"]
