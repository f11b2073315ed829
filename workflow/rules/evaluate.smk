# evaluate stage rules (see docs/interfaces.md)
