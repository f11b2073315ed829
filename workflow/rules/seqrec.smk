# seqrec stage rules (see docs/interfaces.md)
