"""Monitoring artefacts generated from the monitoring guide (docs/monitoring.md): Prometheus alert rules
(:mod:`.rules`), the Grafana dashboard (:mod:`.dashboard`), a Prometheus scrape config with
file_sd targets (:mod:`.scrape`), and the list of exported metrics they may use
(:mod:`.catalog`). Pure functions; ``plumctl monitoring`` writes them out."""
