"""The fault-injecting checker: traffic through the local stack on Apache Kafka and PostgreSQL while a schedule
kills services, restarts the broker and the database, makes the database read-only and fills its disk; then the
whole history is checked, every order (`credited chaos`, `make chaos`)."""
