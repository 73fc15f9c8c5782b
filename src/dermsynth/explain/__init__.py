"""Explanations: how real images and their projections sit in a classifier's embedding space."""
