"""Scenarios shipped for `pbx simulate` (data files): `--scenario monday` runs monday.yaml."""
