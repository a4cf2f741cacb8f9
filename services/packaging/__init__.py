"""Build-time tools: gRPC stub generation, the plugin folder Grafana loads, the installable zip."""
