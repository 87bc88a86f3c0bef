"""Configuration: `schema` (the sections and their keys), `loading` (the layers, files and
environment), `sink_values` (formats of the sink keys)."""
