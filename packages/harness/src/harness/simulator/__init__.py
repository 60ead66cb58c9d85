"""A simulator of users, a payment provider and a platform backend, with the ground truth to score a run."""
