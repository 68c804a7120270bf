"""Use cases as plain functions over a unit of work: record inbound, run an AI turn, deliver outbound."""
