"""A stand-in for Grafana: launches the plugin as Grafana does and reads its streams."""
