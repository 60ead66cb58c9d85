"""A local payment provider for development and tests: WeChat Pay API v3 and Alipay on one loopback
server, with its own test keys, signed notifications with drop, delay and duplicate knobs, and query,
refund, refund-query and close endpoints with injectable failures and timeouts."""
