"""The support console (`credited console`) and the terminal view of an order (`credited order`), both clients of
payments' support API."""
