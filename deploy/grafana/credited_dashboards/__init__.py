"""credited's Grafana dashboards as code (grafana-foundation-sdk). `make dashboards` writes them as JSON
to deploy/grafana/dashboards/, which Grafana provisions; a test fails when the JSON drifts from here."""
