"""Load generation, perf_analyzer / genai-perf drivers, reports and SLO gates."""
