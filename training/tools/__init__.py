"""Research-only tools: recover, select, compare, baseline-fer, summary and the framing measurement.

None of them is on the path from data to a shipped model; the service never imports them."""
