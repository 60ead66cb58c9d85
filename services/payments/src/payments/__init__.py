"""payments: takes top-up orders and the providers' signed payment callbacks, and publishes payment events."""
