"""The plumbing every credited service shares: Kafka, PostgreSQL, the outbox, HTTP, metrics, signatures.

Services import `contracts` and `servicekit`, never each other.
"""
