"""Speed benchmarks on this machine (`elit-bench bench`, `elit_bench.bench.cli`).

`speed`: training steps/s and MFU of the real training step, forward latency across budgets;
`inception`: Inception feature extraction, ours against torch-fidelity's. The library API::

    from elit_bench.bench import train_speed, latency_sweep, forward_latency, peak_flops
"""

from elit_bench.bench.speed import (
    captured_forward,
    forward_latency,
    latency_sweep,
    peak_flops,
    train_speed,
    write_random_latents,
)

__all__ = ["captured_forward", "forward_latency", "latency_sweep", "peak_flops", "train_speed", "write_random_latents"]
