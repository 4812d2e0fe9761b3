"""Failed payments (dunning): retries, grace, suspension, then cancel or downgrade.

One case per failed invoice. ``policy`` is the pure state machine; ``handlers``
apply billing events to cases; ``cases`` persists a decision; ``notices`` and
``reasons`` are what its emails say; ``workflow`` registers it with the engine.
"""
