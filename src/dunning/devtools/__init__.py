"""Tools for running the product without its real surroundings: the demo, the sandbox billing API
and an embedded Redis.

Nothing here is needed when every server is configured (``DUNNING_REDIS_URL``,
``DUNNING_BILLING_URL``); the one production use is the embedded Redis an
install falls back to when no ``DUNNING_REDIS_URL`` is set. Importing this
package imports none of its modules.
"""
