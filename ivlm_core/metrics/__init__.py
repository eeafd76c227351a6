"""Contact and affordance evaluation metrics."""
