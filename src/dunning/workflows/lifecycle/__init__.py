"""Lifecycle notices: renewals, card expiry, the annual offer, trials and temporary upgrades."""
