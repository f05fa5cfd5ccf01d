"""Identifier data and its rules: handles, values, stores, identities and the write service."""
