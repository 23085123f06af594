"""Prefect flows, the configuration model and the command line."""
