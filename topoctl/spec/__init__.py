"""The file -> the model: YAML with marks, the schema, building, semantic checks, the compiled cache."""
