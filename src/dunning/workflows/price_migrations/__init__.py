"""Price migrations (``dunning prices``): raise a plan's price carefully.

An operator plans a migration (terms validated in :mod:`.terms`), previews its impact
and launches it; planning, preview and launch are a few set-based statements
(:mod:`.members`, :mod:`.reports`) whatever the number of subscribers. The money and
date rules are pure functions in :mod:`.pricing`. Once launched, the workers notify each
subscriber, record their choice and apply the new price at the renewal the rules allow.
"""
