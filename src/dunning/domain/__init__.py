"""Pure policy: no I/O, no Dramatiq, no SQLAlchemy. Facts and a clock in, decisions out."""
