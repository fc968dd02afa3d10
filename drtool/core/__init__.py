"""Pure logic: no network, no SDK imports. Everything here is testable with plain values."""
