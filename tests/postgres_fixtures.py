"""Placeholder: the throwaway PostgreSQL cluster fixtures land here (issue 3)."""
