"""The network face of idnode: Handle REST API, admin API, cache tiers, native protocol, CLI."""
