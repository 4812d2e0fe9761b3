"""The broker: Dramatiq's Redis broker with our consumer and middleware, laid out as Dramatiq lays out its own.

- :mod:`.setup`: building the broker from settings (:func:`~dunning.broker.setup.setup_broker`).
- :mod:`.names`: queue and actor names (the contract's).
- :mod:`.enqueue`: sending many messages in one round trip after a commit.
- :mod:`.consumer`: the consumer that parks bytes that are not a message.
- :mod:`.liveness`, :mod:`.reclaim`: worker heartbeats and giving back a dead worker's messages.
- :mod:`.middleware`: one middleware per module.

Importing any of these has no side effect: no broker is built, no server
started, no connection opened.
"""
