# llm stage rules (see docs/interfaces.md)
