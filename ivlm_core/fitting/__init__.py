"""Joint human-object fitting: object library, contact-guided init (ICP), silhouette + contact losses."""
