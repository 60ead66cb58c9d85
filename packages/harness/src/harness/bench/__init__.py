"""Benchmarks that write reports: figures are measured, never asserted."""
