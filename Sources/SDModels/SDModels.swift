// Placeholder replaced by the model code.
