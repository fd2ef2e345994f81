"""glyph-fleet: a fleet inventory rendered into central Prometheus and Alertmanager configs."""
