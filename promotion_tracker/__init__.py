"""Clause-8 promotion award: the policy, the award rule and the tally built on it."""
