"""Cache tiers: local LRU, Redis, invalidation across processes, the Redis breaker."""
