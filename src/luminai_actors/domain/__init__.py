"""Pure rules with no I/O: identifiers, phone identity, the TreeFlow engine."""
