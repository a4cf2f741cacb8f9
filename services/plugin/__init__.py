"""The gRPC process Grafana launches: relays the pipeline's channels to Grafana Live."""
