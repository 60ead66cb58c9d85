"""The tooling that drives credited's services from outside, as their clients do: the simulator (users, a payment
provider, a platform backend), the load generators, the benchmarks and the chaos run. It starts the services
through their entry points and talks to them over HTTP and Kafka; of a service's code it imports only the
service's bench entry point (`<service>.bench`), a rule import-linter checks."""
