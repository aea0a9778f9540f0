"""The alliance admin console (the operator's back office in the browser)."""
