"""Logic behind the Python-backend models: tokenizing, stop words, detokenizing, the CPU engine."""
