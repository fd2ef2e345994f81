"""What the remediator can do to a component: restart backends and cache cleaning."""
