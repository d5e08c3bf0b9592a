"""Turns a run's results JSON into figures and an HTML page."""
