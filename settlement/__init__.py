"""Settlement: periods, multilateral netting, statements, reconciliation (issue 5)."""
