"""Tests of the fenced root CLI (felhom_agent.privileged)."""
