"""The brain eval: scripted conversations held through the whole service, scored per field (issue 20)."""
