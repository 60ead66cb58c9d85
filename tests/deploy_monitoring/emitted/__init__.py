"""What the services really emit: each service's own metrics objects, driven through the situations the
alerts are about, scraped the way Prometheus scrapes them (with the job and instance labels of
deploy/prometheus/prometheus.yml), step by step. The series collected here are what the label test checks
the rules and dashboards against, and what the promtool unit tests take as input."""
