# report stage rules (see docs/interfaces.md)
