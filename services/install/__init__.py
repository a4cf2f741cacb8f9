"""Where zmqstream runs: what `make run` says when the pipeline is up."""
