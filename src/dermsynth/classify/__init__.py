"""Skin-lesion classifiers: training recipes, scenarios (baseline / synthetic / augmented), predictions and the studies' tables."""
