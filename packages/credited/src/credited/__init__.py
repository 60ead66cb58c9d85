"""credited's command line: the local stack, the simulator, and the developer tools around them."""
