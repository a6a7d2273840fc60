"""The training core: one run's fit (loop), the probes, the frozen-feature and prefix caches, the
fine-tuning recipes, transforms on the device, precision and memory rules, and the metrics.

Nothing is imported here, so `import bench.training.metrics` does not load torch.
"""
