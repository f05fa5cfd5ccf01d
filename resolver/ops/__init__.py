"""Operating the node: Prometheus metrics, health endpoints, logs."""
