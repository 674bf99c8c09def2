"""Speed scripts (print figures; not tests)."""
