"""zmqstream's benchmarks: `python -m bench [--quick] [--only NAME] [--check]`.

Every figure comes from real processes (generator workers, broker, the plugin launched
through its gpx_ launcher) and a gRPC client doing what Grafana does, and is compared
with its target, or with a baseline measured in the same run, as a ratio.
"""
