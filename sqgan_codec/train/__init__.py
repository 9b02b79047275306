"""Training code. Imports the inference modules; nothing in the codec imports this package."""
