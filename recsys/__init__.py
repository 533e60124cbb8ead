"""recsys: session-aware recommendations for electronics storefronts."""
