"""The shell around the domain: load facts, call the policy, persist the decision.

Services never import Dramatiq: whatever must be enqueued after a commit is
returned as :class:`~dunning.services.jobs.Dispatch` items for the caller.
"""
