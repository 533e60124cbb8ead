"""The synthetic electronics world: catalog generator and shopper simulator with hidden preferences."""
