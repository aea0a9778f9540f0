"""A small domain-free kernel: configuration, database access, clock, ids, limits, errors."""
