"""The benchmark harness: declared scenarios, open-loop load, HDR latency, resource sampling,
raw results with metadata, and the tidy summary derived from them (docs/methodology.md)."""
