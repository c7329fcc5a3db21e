"""Reading configuration files: YAML with each value's file and line, and the error that
names them. Neutral (imports nothing of ours) so every package that reads a file can use it."""
