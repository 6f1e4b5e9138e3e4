"""Tests of the control core (felhom_agent.reconcile)."""
