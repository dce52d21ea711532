"""Negative-transfer studies: which tasks help or hurt each other (``mtlo transfer``)."""
