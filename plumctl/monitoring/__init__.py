"""Monitoring artefacts generated from the seed's monitoring guide: Prometheus alert rules
(:mod:`.rules`), the Grafana dashboard (:mod:`.dashboard`), a Prometheus scrape config with
file_sd targets (:mod:`.scrape`), and the list of exported metrics they may use
(:mod:`.catalog`). Pure functions; ``plumctl monitoring`` writes them out."""
