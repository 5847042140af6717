"""Plumbing every stage shares: atomic writes, the runtime and its precision, CPU facts, code identity,
progress, provenance, SLURM resources and the table writer."""
