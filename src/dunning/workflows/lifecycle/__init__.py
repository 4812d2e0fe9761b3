"""Lifecycle notices: renewal notices, pre-dunning (expiring cards), the annual-switch offer,
trial reminders and outcomes, temporary-upgrade prompts.

One pure planner (``planner.plan_notices``) says, from the facts about a subscription, the policy
and ``now``, which notices should exist and when; one module per kind holds that kind's rules
(``renewals``, ``card_expiry``, ``annual_offer``, ``trials``, ``upgrades``). The engine reconciles
jobs and the outbox against the planner's answer on every fact change and again when a job is due.
"""
