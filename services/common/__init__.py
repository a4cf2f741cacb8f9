"""Pieces every zmqstream process shares: wire messages, channel paths, endpoints, config, logs."""
