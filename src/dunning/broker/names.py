"""Queue and actor names: part of the public contract (§1) and of the scheduler's wiring."""

EVENTS_QUEUE = "billing_events"
INGEST_ACTOR = "ingest_event"
JOBS_QUEUE = "dunning"
JOBS_ACTOR = "run_job"
MAIL_QUEUE = "mail"
MAIL_ACTOR = "deliver_email"

ACTOR_FOR_QUEUE = {JOBS_QUEUE: JOBS_ACTOR, MAIL_QUEUE: MAIL_ACTOR}
ALL_QUEUES = (EVENTS_QUEUE, JOBS_QUEUE, MAIL_QUEUE)
