"""Head analyses over captured statistics."""
