"""``mtlo transfer``: which tasks help or hurt each other; methods, analysis, grouping."""
