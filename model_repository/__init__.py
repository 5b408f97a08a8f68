"""Template Triton model repository (data): one folder per model."""
