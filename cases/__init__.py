"""The paper's claims as data: one row per claim case."""
