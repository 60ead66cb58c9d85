"""reconciler: joins payments and credits per order, publishes each order's status, and catches
paid-but-not-credited orders."""
