"""Command-line tools that sit beside training: checkpoint importers and converters."""
