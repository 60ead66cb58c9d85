"""notifier: tells the user about every status change of their order, once per change."""
